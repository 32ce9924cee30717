// Command mkimage writes the end-to-end tests' busybox image: a rootfs
// directory and an OCI image archive made from it, with no registry.
//
//	go run ./tests/cmd/mkimage -rootfs DIR -archive FILE [-ref NAME] [-busybox PATH]
//
// Import the archive with `ctr images import FILE`; run the rootfs directly
// with `ctr run --rootfs DIR`.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/image"
)

func main() {
	rootfs := flag.String("rootfs", "", "directory to build the busybox rootfs in (required)")
	archive := flag.String("archive", "", "path of the OCI image archive to write (optional)")
	ref := flag.String("ref", "docker.io/library/busybox:shimtest", "image name stored in the archive")
	busybox := flag.String("busybox", image.BusyboxPath, "statically linked busybox binary")
	flag.Parse()
	if *rootfs == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := image.BuildRootfs(*rootfs, *busybox); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
	if *archive == "" {
		return
	}
	desc, err := image.WriteArchiveFile(*archive, *rootfs, *ref)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
	fmt.Printf("%s %s\n", *ref, desc.Digest)
}
