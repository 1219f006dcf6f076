# gbgate: the commands the README gives. Each target installs what it needs.
CARGO ?= cargo
SHELL := /bin/bash

.PHONY: all deps bench-deps clips build demo test bench lint fmt fuzz clean

all: build

# System packages used by the tests and benchmarks (Debian): sipp is the
# third-party SIP peer; ffmpeg/ffprobe decode what we serve and make the
# test clips; GStreamer's mpegpsmux writes PS we did not write. Debian's
# ffmpeg 5.1 cannot read H.265 in FLV, so the static ffmpeg of the PyPI
# package imageio-ffmpeg checks that. PostgreSQL: the policy crate's audit
# tests start a throwaway cluster of their own (they fail without it). The
# PyPI package openapi-spec-validator checks the OpenAPI document a node
# serves (integration/tests/openapi.rs fails without it).
deps:
	@missing=""; \
	command -v sipp >/dev/null 2>&1 || missing="$$missing sip-tester"; \
	command -v ffprobe >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v gst-launch-1.0 >/dev/null 2>&1 || missing="$$missing gstreamer1.0-tools"; \
	gst-inspect-1.0 mpegpsmux >/dev/null 2>&1 || missing="$$missing gstreamer1.0-plugins-bad gstreamer1.0-plugins-base"; \
	gst-inspect-1.0 x264enc >/dev/null 2>&1 || missing="$$missing gstreamer1.0-plugins-ugly"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@python3 -c "import imageio_ffmpeg" 2>/dev/null || python3 -m pip install -q imageio-ffmpeg
	@python3 -c "import openapi_spec_validator" 2>/dev/null || python3 -m pip install -q openapi-spec-validator
	@python3 -c "import selenium" 2>/dev/null || python3 -m pip install -q selenium
	@# The console's player library, from the npm registry (not committed):
	@# gateway/build.rs embeds it in the binary.
	@test -f console/node_modules/mpegts.js/dist/mpegts.js || \
	  (cd console && npm install --no-audit --no-fund --silent)

# Test clips, generated (not committed): 4 s of 640x360 at 25 fps, one
# keyframe a second, no B-frames, as cameras send. Also PS files written by
# other muxers (GStreamer mpegpsmux with a PSM, ffmpeg -f vob without one).
CLIPS := target/clips
clips: $(CLIPS)/h264.h264 $(CLIPS)/h265.h265 $(CLIPS)/gst.ps $(CLIPS)/ffmpeg.vob $(CLIPS)/h264_4m.h264 \
  $(CLIPS)/h264_4m_g25.h264 $(CLIPS)/h264_4m_g50.h264
$(CLIPS)/h264.h264: | deps
	mkdir -p $(CLIPS)
	ffmpeg -v error -y -f lavfi -i testsrc2=size=640x360:rate=25 -t 4 -pix_fmt yuv420p \
	  -c:v libx264 -profile:v main -g 25 -bf 0 -x264-params aud=1 -f h264 $@
# 4 Mbps 720p (noise keeps the encoder from compressing it away): the
# slow-viewer and lossy-link tests' camera. x264's scene-cut fires on the
# noise, so nearly every other frame is an IDR: a worst case for caches,
# not a camera.
$(CLIPS)/h264_4m.h264: | deps
	mkdir -p $(CLIPS)
	ffmpeg -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=25,noise=alls=20:allf=t" -t 4 -pix_fmt yuv420p \
	  -c:v libx264 -preset veryfast -profile:v main -g 25 -bf 0 -b:v 4M -maxrate 4M -bufsize 2M -x264-params aud=1 -f h264 $@
# The same picture as a camera encodes it: scene-cut off, a fixed GOP of 25
# (one IDR a second) or 50 (one every two seconds); the benchmarks' cameras.
$(CLIPS)/h264_4m_g%.h264: | deps
	mkdir -p $(CLIPS)
	ffmpeg -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=25,noise=alls=20:allf=t" -t 8 -pix_fmt yuv420p \
	  -c:v libx264 -preset veryfast -profile:v main -g $* -keyint_min $* -sc_threshold 0 -bf 0 -b:v 4M -maxrate 4M -bufsize 2M \
	  -x264-params aud=1 -f h264 $@
$(CLIPS)/h265.h265: | deps
	mkdir -p $(CLIPS)
	ffmpeg -v error -y -f lavfi -i testsrc2=size=640x360:rate=25 -t 4 -pix_fmt yuv420p \
	  -c:v libx265 -x265-params keyint=25:min-keyint=25:bframes=0:no-open-gop=1:repeat-headers=1:aud=1:log-level=error -f hevc $@
# Encoded inside the pipeline so buffers carry timestamps (mpegpsmux fed
# from a raw .h264 file writes PES without PTS).
$(CLIPS)/gst.ps: | deps
	mkdir -p $(CLIPS)
	gst-launch-1.0 -q videotestsrc num-buffers=100 ! video/x-raw,width=640,height=360,framerate=25/1 \
	  ! x264enc key-int-max=25 bframes=0 bitrate=800 ! h264parse ! mpegpsmux ! filesink location=$@
$(CLIPS)/ffmpeg.vob: $(CLIPS)/h264.h264
	ffmpeg -v error -y -r 25 -i $< -c copy -f vob $@

build:
	$(CARGO) build --workspace --bins

# A 15-node tree (city <- 2 counties <- 2 towns <- 2 villages, 20 simulated
# cameras per village) on 127.0.0.1; prints the city's catalog; Ctrl-C stops it.
# The county -> city links run over QUIC: a federation CA and a certificate
# for the city and each county, made once with `gbgate cert` and kept in
# $(DEMO_PKI).
DEMO_PKI := .demo-pki
DEMO_QUIC_NODES := 35010000002000000001 35010200002000000001 35010300002000000001
demo: clips
	$(CARGO) build --release --workspace --bins
	@test -f $(DEMO_PKI)/ca.crt || ./target/release/gbgate cert init-ca --dir $(DEMO_PKI) --name "gbgate demo federation CA"
	@for id in $(DEMO_QUIC_NODES); do \
	  test -f $(DEMO_PKI)/$$id.crt || ./target/release/gbgate cert issue --dir $(DEMO_PKI) --node $$id --ip 127.0.0.1 --days 90 || exit 1; \
	done
	./target/release/gbdemo --pki $(DEMO_PKI)

# Incremental state only pays when the same tree is rebuilt; on a clean
# clone (CI) it is gigabytes of disk for nothing.
test: export CARGO_INCREMENTAL ?= 0
test: deps clips
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace -- --test-threads=2
	# The multi-tier tests again with every link between the tiers over
	# QUIC, and in a mixed tree (county -> city QUIC, towns TCP, villages UDP).
	GBGATE_TEST_LINKS=quic $(CARGO) test -p integration --test media --test tree --test sharing --test audit_heads --test control -- --test-threads=2
	GBGATE_TEST_LINKS=mixed $(CARGO) test -p integration --test media --test tree --test sharing --test audit_heads --test control -- --test-threads=2

# What only the benchmarks need: Kamailio, the trusted registrar the
# REGISTER storm is measured against (integration/kamailio/registrar.cfg),
# and jemalloc, preloaded into the storm's sipp: with glibc's malloc its
# cost per call grows through a 2-minute step (integration/src/storm.rs).
bench-deps: deps
	@missing=""; \
	command -v kamailio >/dev/null 2>&1 || missing="$$missing kamailio"; \
	dpkg -s libjemalloc2 >/dev/null 2>&1 || missing="$$missing libjemalloc2"; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# Benchmarks print figures; BENCHMARKS.md records the latest with these commands.
bench: bench-deps clips
	$(CARGO) build --release --workspace --bins
	$(CARGO) test --release -p integration --test bench --test bench_people -- --ignored --nocapture --test-threads=1
	$(CARGO) test --release -p policy --test audit_bench -- --ignored --nocapture --test-threads=1
	$(CARGO) test --release -p policy --test bench -- --ignored --nocapture

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Fuzz every parser for FUZZ_SECONDS each (needs the nightly toolchain and cargo-fuzz).
# fuzz/seeds/<target> holds starting inputs for targets random bytes rarely reach.
FUZZ_SECONDS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz
	cd fuzz && for t in $$($(CARGO) +nightly fuzz list); do \
	  mkdir -p corpus/$$t; if [ -d seeds/$$t ]; then cp -n seeds/$$t/* corpus/$$t/; fi; \
	  $(CARGO) +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

clean:
	$(CARGO) clean
	rm -rf .demo .demo-pki
