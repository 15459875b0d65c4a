#!/usr/bin/env bash
# The device calls that produced this folder: `bash calls.sh N` for N = 1, 2, 3, on tree df22166, where these
# steps were this file itself; they now live in benchmarks/qualify_on_device.sh, run here as a first
# qualification (FIRST_TIME=1).
cd "$(dirname "$0")/../../.." && FIRST_TIME=1 exec bash benchmarks/qualify_on_device.sh "$@"
