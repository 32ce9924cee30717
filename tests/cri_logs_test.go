package tests

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/image"
)

// criLogLine is one line of a CRI log file:
// "<RFC 3339 nano timestamp> <stdout|stderr> <P|F> <content>".
type criLogLine struct {
	ts      time.Time
	stream  string
	tag     string // P: partial, continued by the next line of the stream; F: full
	content string
}

// parseCRILog parses a CRI log file, failing on any line not in the format.
func parseCRILog(data []byte) ([]criLogLine, error) {
	var lines []criLogLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		parts := strings.SplitN(sc.Text(), " ", 4)
		if len(parts) != 4 {
			return lines, fmt.Errorf("line %d %q: want 4 space-separated fields", n, sc.Text())
		}
		ts, err := time.Parse(time.RFC3339Nano, parts[0])
		if err != nil {
			return lines, fmt.Errorf("line %d: timestamp: %w", n, err)
		}
		if parts[1] != "stdout" && parts[1] != "stderr" {
			return lines, fmt.Errorf("line %d: stream %q, want stdout or stderr", n, parts[1])
		}
		if parts[2] != string(runtimeapi.LogTagPartial) && parts[2] != string(runtimeapi.LogTagFull) {
			return lines, fmt.Errorf("line %d: tag %q, want P or F", n, parts[2])
		}
		lines = append(lines, criLogLine{ts: ts, stream: parts[1], tag: parts[2], content: parts[3]})
	}
	return lines, sc.Err()
}

// criLogMessages joins each stream's partial lines into messages, in
// order; a trailing partial (output that ended without a newline) is a
// message of its own.
func criLogMessages(lines []criLogLine) map[string][]string {
	out := map[string][]string{}
	pending := map[string]string{}
	open := map[string]bool{}
	for _, l := range lines {
		pending[l.stream] += l.content
		open[l.stream] = true
		if l.tag == string(runtimeapi.LogTagFull) {
			out[l.stream] = append(out[l.stream], pending[l.stream])
			pending[l.stream], open[l.stream] = "", false
		}
	}
	for s, ok := range open {
		if ok {
			out[s] = append(out[s], pending[s])
		}
	}
	return out
}

// readCRILog reads and parses path ("" lines when it does not exist yet).
func readCRILog(t *testing.T, path string) []criLogLine {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	lines, err := parseCRILog(data)
	if err != nil {
		t.Fatalf("CRI log %s: %v", path, err)
	}
	return lines
}

// waitLogLine polls the CRI log at path until one of its messages is msg.
func waitLogLine(t *testing.T, path, msg string, timeout time.Duration) {
	t.Helper()
	var msgs map[string][]string
	if !pollUntil(timeout, func() bool {
		msgs = criLogMessages(readCRILog(t, path))
		return slices.Contains(msgs["stdout"], msg) || slices.Contains(msgs["stderr"], msg)
	}) {
		t.Fatalf("CRI log %s: no message %q within %v; messages %q", path, msg, timeout, msgs)
	}
}

// TestCRIContainerLogs: what a container writes reaches its CRI log file
// in CRI format, per stream in order: full lines tagged F, a line longer
// than max_container_log_line_size (16 KiB) split into P parts and a
// final F, and output ending without a newline as a final P.
func TestCRIContainerLogs(t *testing.T) { testCRIContainerLogs(t, newCRIEnv(t)) }

// testCRIContainerLogs is TestCRIContainerLogs on e: with or without a pause container
// (TestCRISandboxerPodSteps).
func testCRIContainerLogs(t *testing.T, e *criEnv) {
	p := e.runPod("logs")
	const long = 40000
	began := time.Now()
	id := p.run("writer", []string{"sh", "-c", fmt.Sprintf(
		"echo out1; echo err1 >&2; head -c %d /dev/zero | tr '\\000' x; echo; echo out2; echo err2 >&2; printf tail-no-newline", long)})
	e.waitState(id, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
	waitLogLine(t, p.logPath("writer"), "tail-no-newline", 10*time.Second)
	ended := time.Now()

	lines := readCRILog(t, p.logPath("writer"))
	// stdout and stderr are copied by two goroutines into one file: order
	// and timestamps hold within a stream, not across the two.
	last := map[string]time.Time{}
	var lastOut criLogLine
	for i, l := range lines {
		if l.ts.Before(began.Add(-time.Second)) || l.ts.After(ended.Add(time.Second)) {
			t.Errorf("line %d: timestamp %v outside the container's run [%v, %v]", i+1, l.ts, began, ended)
		}
		if l.ts.Before(last[l.stream]) {
			t.Errorf("line %d: %s timestamp %v before the stream's previous line's %v", i+1, l.stream, l.ts, last[l.stream])
		}
		last[l.stream] = l.ts
		if l.stream == "stdout" {
			lastOut = l
		}
	}
	var parts []criLogLine
	for _, l := range lines {
		if l.stream == "stdout" && strings.Trim(l.content, "x") == "" && l.content != "" {
			parts = append(parts, l)
		}
	}
	var tags []string
	total := 0
	for _, l := range parts {
		tags = append(tags, l.tag)
		total += len(l.content)
		if len(l.content) > 16384 {
			t.Errorf("a part of the long line has %d bytes, more than max_container_log_line_size 16384", len(l.content))
		}
	}
	if want := []string{"P", "P", "F"}; !slices.Equal(tags, want) || total != long {
		t.Errorf("the %d-byte line: tags %v with %d bytes in all, want %v with %d", long, tags, total, want, long)
	}
	msgs := criLogMessages(lines)
	wantOut := []string{"out1", strings.Repeat("x", long), "out2", "tail-no-newline"}
	if !slices.Equal(msgs["stdout"], wantOut) {
		t.Errorf("stdout messages = %.80q, want %.80q", msgs["stdout"], wantOut)
	}
	if want := []string{"err1", "err2"}; !slices.Equal(msgs["stderr"], want) {
		t.Errorf("stderr messages = %q, want %q", msgs["stderr"], want)
	}
	if lastOut.tag != string(runtimeapi.LogTagPartial) || lastOut.content != "tail-no-newline" {
		t.Errorf("last stdout line: tag %q content %q, want the unterminated output tagged P", lastOut.tag, lastOut.content)
	}
	e.removeContainer(id)
	p.remove()
}

// TestCRIReopenContainerLog: after the log file is moved away (log
// rotation), ReopenContainerLog makes CRI write to a new file at the log
// path; output before the reopen stays in the moved file only. A stopped
// container cannot reopen its log.
func TestCRIReopenContainerLog(t *testing.T) { testCRIReopenContainerLog(t, newCRIEnv(t)) }

// testCRIReopenContainerLog is TestCRIReopenContainerLog on e: with or without a pause container
// (TestCRISandboxerPodSteps).
func testCRIReopenContainerLog(t *testing.T, e *criEnv) {
	p := e.runPod("reopen")
	// tail -f copies what execs append to /tmp/in to the container's
	// stdout, so each message is written when the test chooses.
	id := p.run("tail", []string{"sh", "-c", "touch /tmp/in; exec tail -f /tmp/in"})
	path := p.logPath("tail")
	e.execSync(id, 10, "sh", "-c", "echo before >> /tmp/in")
	waitLogLine(t, path, "before", 30*time.Second)

	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.rt.ReopenContainerLog(e.ctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: id}); err != nil {
		t.Fatalf("ReopenContainerLog: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("log path after ReopenContainerLog: %v, want a new file", err)
	}
	e.execSync(id, 10, "sh", "-c", "echo after >> /tmp/in")
	waitLogLine(t, path, "after", 30*time.Second)
	if got := criLogMessages(readCRILog(t, path))["stdout"]; !slices.Equal(got, []string{"after"}) {
		t.Errorf("new log file messages = %q, want [after]", got)
	}
	if got := criLogMessages(readCRILog(t, rotated))["stdout"]; !slices.Equal(got, []string{"before"}) {
		t.Errorf("rotated log file messages = %q, want [before]", got)
	}

	e.stopContainer(id, 0)
	if _, err := e.d.rt.ReopenContainerLog(e.ctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: id}); err == nil {
		t.Errorf("ReopenContainerLog of a stopped container succeeded, want an error")
	}
	e.removeContainer(id)
	p.remove()
}

// criLogBytes rebuilds what a stream carried from its CRI log lines: a P
// line's content continues in the next, an F line ends with the newline
// the logger split on.
func criLogBytes(lines []criLogLine, stream string) []byte {
	var b bytes.Buffer
	for _, l := range lines {
		if l.stream != stream {
			continue
		}
		b.WriteString(l.content)
		if l.tag == string(runtimeapi.LogTagFull) {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// TestCRILogBytes: 1 MiB of arbitrary bytes on stdout and a different
// 1 MiB on stderr, written at once, are in the CRI log byte-exact (but
// for the CR of each CRLF, which CRI's logger drops) once the container
// has exited: the shim hands the container's output to
// containerd's fifos and the CRI logger writes all of it.
func TestCRILogBytes(t *testing.T) { testCRILogBytes(t, newCRIEnv(t)) }

// testCRILogBytes is TestCRILogBytes on e: with or without a pause container
// (TestCRISandboxerPodSteps).
func testCRILogBytes(t *testing.T, e *criEnv) {
	p := e.runPod("logbytes")
	id := p.run("blobs", []string{"sh", "-c", fmt.Sprintf("cat %s & cat %s >&2; wait", image.StdoutBlob, image.StderrBlob)})
	st := e.waitState(id, runtimeapi.ContainerState_CONTAINER_EXITED, time.Minute)
	if st.ExitCode != 0 {
		t.Errorf("exit code %d, want 0", st.ExitCode)
	}
	// The logger finishes a stream at EOF of its fifo, which can follow
	// the exit by a moment.
	for _, s := range []struct {
		stream string
		seed   uint64
	}{{"stdout", 1}, {"stderr", 2}} {
		// The logger reads with bufio.Reader.ReadLine, which takes "\r\n"
		// as a line end as well: a CR before a LF is not logged.
		want := bytes.ReplaceAll(image.Pattern(s.seed, image.BlobSize), []byte("\r\n"), []byte("\n"))
		var got []byte
		pollUntil(10*time.Second, func() bool {
			got = criLogBytes(readCRILog(t, p.logPath("blobs")), s.stream)
			return len(got) >= len(want)
		})
		assertBytes(t, s.stream+" in the CRI log", got, want)
	}
	e.removeContainer(id)
	p.remove()
}
