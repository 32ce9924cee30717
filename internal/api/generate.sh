#!/usr/bin/env bash
# Regenerates internal/api's .pb.go files from their .proto files: run it
# (or `make proto`) after editing a .proto, and commit both. Builds and CI
# use the checked-in .pb.go and need no protoc.
#
# Needs protoc (Debian: apt-get install protobuf-compiler) with the
# well-known types beside it, and the module cache (go mod download).
# protoc-gen-go is built from go.mod's google.golang.org/protobuf, so the
# generated code always matches the runtime it links against. containerd's
# types/*.proto are imported from the api module go.mod selects.
set -euo pipefail

cd "$(dirname "$0")/../.."
go=${GO:-go}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$go" build -o "$tmp/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go

api=$("$go" list -m -f '{{.Dir}}' github.com/containerd/containerd/api)
if [ -z "$api" ]; then
	echo "generate.sh: github.com/containerd/containerd/api is not in the module cache: run go mod download" >&2
	exit 1
fi

protoc --plugin=protoc-gen-go="$tmp/protoc-gen-go" \
	-I . -I "$api" \
	--go_out=. --go_opt=paths=source_relative \
	internal/api/sandboxpb/sandbox.proto internal/api/cripb/api.proto
