package cgroups

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
)

// blkioV1 fills Blkio from the CFQ scheduler's recursive files when the
// kernel has them and they count anything, and otherwise from the
// throttle files, which every kernel keeps (BFQ and blk-mq hosts have no
// CFQ files), as containerd's cgroup1 does. Of the throttle files it
// prefers the recursive ones, which the fields are named for; for a
// container's leaf cgroup both count the same.
func blkioV1(dir, procDir string, m *v1.Metrics) error {
	b := &v1.BlkIOStat{}
	m.Blkio = b
	var devices map[[2]uint64]string
	read := func(files []string, dst *[]*v1.BlkIOEntry) error {
		for _, name := range files {
			data, ok, err := readFile(dir, "blkio."+name)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if devices == nil {
				devices = blockDevices(procDir)
			}
			return parseBlkio(dir, "blkio."+name, data, devices, dst)
		}
		return nil
	}
	if _, err := os.Lstat(filepath.Join(dir, "blkio.io_serviced_recursive")); err == nil {
		n := 0
		for _, f := range []struct {
			name string
			dst  *[]*v1.BlkIOEntry
		}{
			{"sectors_recursive", &b.SectorsRecursive},
			{"io_service_bytes_recursive", &b.IoServiceBytesRecursive},
			{"io_serviced_recursive", &b.IoServicedRecursive},
			{"io_queued_recursive", &b.IoQueuedRecursive},
			{"io_service_time_recursive", &b.IoServiceTimeRecursive},
			{"io_wait_time_recursive", &b.IoWaitTimeRecursive},
			{"io_merged_recursive", &b.IoMergedRecursive},
			{"time_recursive", &b.IoTimeRecursive},
		} {
			if err := read([]string{f.name}, f.dst); err != nil {
				return err
			}
			n += len(*f.dst)
		}
		if n > 0 {
			return nil
		}
		*b = v1.BlkIOStat{}
	}
	if err := read([]string{"throttle.io_serviced_recursive", "throttle.io_serviced"}, &b.IoServicedRecursive); err != nil {
		return err
	}
	return read([]string{"throttle.io_service_bytes_recursive", "throttle.io_service_bytes"}, &b.IoServiceBytesRecursive)
}

// parseBlkio parses a blkio file: "major:minor [op] value" lines and a
// "Total value" line, which is skipped.
func parseBlkio(dir, name, data string, devices map[[2]uint64]string, dst *[]*v1.BlkIOEntry) error {
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || (len(f) == 2 && f[0] == "Total") {
			continue
		}
		if len(f) != 2 && len(f) != 3 {
			return badFormat(dir, name, line, nil)
		}
		major, minor, ok := strings.Cut(f[0], ":")
		if !ok {
			return badFormat(dir, name, line, nil)
		}
		var e v1.BlkIOEntry
		var err error
		if e.Major, err = strconv.ParseUint(major, 10, 64); err != nil {
			return badFormat(dir, name, line, err)
		}
		if e.Minor, err = strconv.ParseUint(minor, 10, 64); err != nil {
			return badFormat(dir, name, line, err)
		}
		if e.Value, err = strconv.ParseUint(f[len(f)-1], 10, 64); err != nil {
			return badFormat(dir, name, line, err)
		}
		if len(f) == 3 {
			e.Op = f[1]
		}
		e.Device = devices[[2]uint64{e.Major, e.Minor}]
		*dst = append(*dst, &e)
	}
	return nil
}

// blockDevices maps major:minor to /dev/<name> from /proc/partitions.
// Names are a nicety: an unreadable or odd table only leaves them empty.
func blockDevices(procDir string) map[[2]uint64]string {
	devices := make(map[[2]uint64]string)
	data, err := os.ReadFile(filepath.Join(procDir, "partitions"))
	if err != nil {
		return devices
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line) // major minor #blocks name
		if len(f) != 4 {
			continue
		}
		major, err1 := strconv.ParseUint(f[0], 10, 64)
		minor, err2 := strconv.ParseUint(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		if _, dup := devices[[2]uint64{major, minor}]; !dup {
			devices[[2]uint64{major, minor}] = filepath.Join("/dev", f[3])
		}
	}
	return devices
}
