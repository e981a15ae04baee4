package client

// These tests run against the real `pyward serve`: the binary named by
// PYWARD_BIN, on a free loopback port, with a temporary config and job
// database. Without PYWARD_BIN they are skipped (failed under CI=true).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// tokenGo and tokenTight are the tokens of the tenants "go" and "tight";
// the hashes are their sha256.
const (
	tokenGo    = "go-secret"
	hashGo     = "a777d655f8f3b7cdb110f275dfe99b07fa84c8a5a6094d831279d01bbcd5a0cf"
	tokenTight = "tight-secret"
	hashTight  = "0d1aaa2cbddf1cd4fb25db5a9fc253b0ab5109dd67ee776b1010c4a2ec19da6e"
)

type server struct {
	url string
	log string
}

// startServer starts `pyward serve` with one run at a time (so a second
// job stays queued behind a slow one), tenant "go" with a generous quota
// and tenant "tight" with a quota of one run.
func startServer(t *testing.T) *server {
	t.Helper()
	bin := os.Getenv("PYWARD_BIN")
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and PYWARD_BIN is unset: build pyward and set PYWARD_BIN=target/debug/pyward")
		}
		t.Skip("\n*** SKIPPED: PYWARD_BIN is unset; these tests need a pyward binary ***")
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and `pyward serve` with the native runtime needs root")
		}
		t.Skip("\n*** SKIPPED: `pyward serve` with the native runtime needs root ***")
	}
	dir := t.TempDir()
	port := freePort(t)
	config := fmt.Sprintf(`listen = "127.0.0.1:%d"
database = %q
max_running = 1
[[tenant]]
name = "go"
tokens_sha256 = [%q]
policies = ["strict"]
runs_per_minute = 600
burst = 100
[[tenant]]
name = "tight"
tokens_sha256 = [%q]
policies = ["strict"]
runs_per_minute = 1
burst = 1
`, port, filepath.Join(dir, "jobs.sqlite3"), hashGo, hashTight)
	configPath := filepath.Join(dir, "pyward.toml")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", configPath)
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s := &server{url: fmt.Sprintf("http://127.0.0.1:%d", port), log: logPath}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		logFile.Close()
		if t.Failed() {
			raw, _ := os.ReadFile(logPath)
			t.Logf("server log:\n%s", raw)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			raw, _ := os.ReadFile(logPath)
			t.Fatalf("the server exited (%v):\n%s", err, raw)
		default:
		}
		if conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			conn.Close()
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the server did not listen within 10 s")
	return nil
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newClient(t *testing.T, s *server, token string) *Client {
	c, err := New(s.url, WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestAgainstServer(t *testing.T) {
	s := startServer(t)
	c := newClient(t, s, tokenGo)

	t.Run("RunOK", func(t *testing.T) {
		out, err := c.Run(ctx(t), Request{Code: "import sys; print(sys.stdin.read().upper())", Stdin: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := out.StdoutBytes()
		if err != nil {
			t.Fatal(err)
		}
		if out.Verdict != VerdictOK || out.ExitCode == nil || *out.ExitCode != 0 || string(stdout) != "HI\n" {
			t.Fatalf("want ok, exit 0, HI; got %+v", out)
		}
		if len(out.TraceID) != 32 {
			t.Fatalf("want a trace id, got %q", out.TraceID)
		}
	})

	t.Run("RunLimitVerdict", func(t *testing.T) {
		out, err := c.Run(ctx(t), Request{Code: "import time; time.sleep(10)", Limits: &Limits{WallTime: "300ms"}})
		if err != nil {
			t.Fatal(err)
		}
		if out.Verdict != VerdictTimeout || !out.Verdict.IsLimit() || out.Message == nil {
			t.Fatalf("want timeout with a message, got %+v", out)
		}
	})

	t.Run("RunBinaryStdout", func(t *testing.T) {
		out, err := c.Run(ctx(t), Request{Code: `import sys; sys.stdout.buffer.write(b"\xff\xfe\x00binary"); sys.stderr.write("é")`})
		if err != nil {
			t.Fatal(err)
		}
		if out.StdoutEncoding != EncodingBase64 {
			t.Fatalf("want base64 stdout, got %+v", out)
		}
		stdout, err := out.StdoutBytes()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(stdout, []byte("\xff\xfe\x00binary")) {
			t.Fatalf("stdout bytes %q", stdout)
		}
		stderr, _ := out.StderrBytes()
		if out.StderrEncoding != EncodingUTF8 || string(stderr) != "é" {
			t.Fatalf("stderr %q (%s)", stderr, out.StderrEncoding)
		}
	})

	t.Run("RunOutputFiles", func(t *testing.T) {
		code := "import os\nopen('r.json', 'w').write('{}')\nopen('raw', 'wb').write(b'\\xff\\x00')\nos.symlink('/etc/passwd', 'link')"
		out, err := c.Run(ctx(t), Request{Code: code, Outputs: []string{"r.json", "raw", "link", "gone"}})
		if err != nil {
			t.Fatal(err)
		}
		if out.Verdict != VerdictOK || len(out.Files) != 4 {
			t.Fatalf("want ok with four files, got %+v", out)
		}
		r := out.File("r.json")
		if data, err := r.Bytes(); err != nil || r.Status != FileOK || string(data) != "{}" || r.Size == nil || *r.Size != 2 {
			t.Fatalf("r.json: %+v", r)
		}
		raw := out.File("raw")
		if data, err := raw.Bytes(); err != nil || raw.Encoding != EncodingBase64 || !bytes.Equal(data, []byte{0xff, 0}) {
			t.Fatalf("raw: %+v", raw)
		}
		if f := out.File("link"); f.Status != FileNotRegular || f.Content != "" || f.Size != nil {
			t.Fatalf("link: %+v", f)
		}
		if f := out.File("gone"); f.Status != FileMissing {
			t.Fatalf("gone: %+v", f)
		}
		_, err = c.Run(ctx(t), Request{Code: "pass", Outputs: []string{"../etc/passwd"}})
		var apiErr *APIError
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 {
			t.Fatalf("an output path out of the work dir: want 400, got %v", err)
		}
	})

	t.Run("SubmitWait", func(t *testing.T) {
		job, err := c.Submit(ctx(t), Request{Code: "print(2 ** 100)"})
		if err != nil {
			t.Fatal(err)
		}
		if len(job.ID) != 32 || job.TraceID == "" {
			t.Fatalf("bad job %+v", job)
		}
		out, err := c.Wait(ctx(t), job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if out.Verdict != VerdictOK || out.Stdout != "1267650600228229401496703205376\n" {
			t.Fatalf("got %+v", out)
		}
		again, err := c.Job(ctx(t), job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if again.Status != StatusFinished || again.Outcome == nil || again.Attempts != 1 || again.FinishedAtMS == nil {
			t.Fatalf("got %+v", again)
		}
	})

	t.Run("StreamEvents", func(t *testing.T) {
		job, err := c.Submit(ctx(t), Request{Code: "import time; time.sleep(0.3); print('done')"})
		if err != nil {
			t.Fatal(err)
		}
		var events []Event
		if err := c.Stream(ctx(t), job.ID, func(e Event) { events = append(events, e) }); err != nil {
			t.Fatal(err)
		}
		if len(events) < 2 {
			t.Fatalf("want status events and an outcome, got %d events", len(events))
		}
		last := events[len(events)-1]
		if last.Type != "outcome" || last.Outcome == nil || last.Outcome.Stdout != "done\n" {
			t.Fatalf("last event %+v", last)
		}
		final := events[len(events)-2]
		if final.Type != "status" || final.Status.Status != StatusFinished || final.Status.ID != job.ID {
			t.Fatalf("the event before the outcome: %+v", final)
		}
	})

	t.Run("StreamChunksWhileRunning", func(t *testing.T) {
		job, err := c.Submit(ctx(t), Request{Code: "import time\nprint('first', flush=True)\ntime.sleep(1)\nprint('second', flush=True)\n"})
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		var stdout []byte
		statusAtFirstChunk := ""
		err = c.Stream(ctx(t), job.ID, func(e Event) {
			types = append(types, e.Type)
			if e.Type != "stdout" {
				return
			}
			b, err := e.Chunk.Bytes()
			if err != nil {
				t.Errorf("chunk %+v: %v", e.Chunk, err)
			}
			if len(stdout) == 0 {
				// The program is asleep after its first line: the job still runs.
				j, err := c.Job(ctx(t), job.ID)
				if err != nil {
					t.Error(err)
				} else {
					statusAtFirstChunk = j.Status
				}
			}
			stdout = append(stdout, b...)
		})
		if err != nil {
			t.Fatal(err)
		}
		if string(stdout) != "first\nsecond\n" {
			t.Fatalf("streamed stdout %q, events %v", stdout, types)
		}
		if statusAtFirstChunk != StatusRunning {
			t.Fatalf("the first chunk came when the job was %q, not running", statusAtFirstChunk)
		}
		first, outcome := -1, -1
		for i, typ := range types {
			if typ == "stdout" && first < 0 {
				first = i
			}
			if typ == "outcome" {
				outcome = i
			}
		}
		if first < 0 || outcome != len(types)-1 || first > outcome {
			t.Fatalf("want stdout chunks before the outcome, got %v", types)
		}
	})

	t.Run("CancelRunning", func(t *testing.T) {
		// Past the strict policy's 10 s wall time: a cancel that did
		// nothing would end as a timeout.
		job, err := c.Submit(ctx(t), Request{Code: "import time\nprint('ready', flush=True)\ntime.sleep(30)\n"})
		if err != nil {
			t.Fatal(err)
		}
		var cancelled *Job
		var types []string
		var line []byte
		err = c.Stream(ctx(t), job.ID, func(e Event) {
			types = append(types, e.Type)
			if e.Type == "stdout" {
				b, _ := e.Chunk.Bytes()
				line = append(line, b...)
			}
			// Once the whole line is in (it may come in pieces).
			if string(line) == "ready\n" && cancelled == nil {
				var err error
				if cancelled, err = c.Cancel(ctx(t), job.ID); err != nil {
					t.Errorf("cancel of the running job: %v", err)
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if cancelled == nil || cancelled.Status != StatusCancelled {
			t.Fatalf("cancel answered %+v; events %v", cancelled, types)
		}
		out, err := c.Wait(ctx(t), job.ID)
		if !errors.Is(err, ErrJobCancelled) {
			t.Fatalf("Wait of a job cancelled while running: want ErrJobCancelled, got %v", err)
		}
		if out == nil || out.Verdict != VerdictSignaled || out.Message == nil ||
			*out.Message != "cancelled by the client; the sandbox was killed" || out.Stdout != "ready\n" {
			t.Fatalf("the outcome of the cancelled run: %+v", out)
		}
		_, err = c.Cancel(ctx(t), job.ID)
		var apiErr *APIError
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 409 || apiErr.Code != "job_finished" {
			t.Fatalf("second cancel: want 409 job_finished, got %v", err)
		}
	})

	t.Run("CancelQueued", func(t *testing.T) {
		// max_running = 1: the second job waits behind the first.
		slow, err := c.Submit(ctx(t), Request{Code: "import time; time.sleep(2)"})
		if err != nil {
			t.Fatal(err)
		}
		queued, err := c.Submit(ctx(t), Request{Code: "print('never')"})
		if err != nil {
			t.Fatal(err)
		}
		cancelled, err := c.Cancel(ctx(t), queued.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cancelled.Status != StatusCancelled {
			t.Fatalf("got %+v", cancelled)
		}
		if _, err := c.Wait(ctx(t), queued.ID); !errors.Is(err, ErrJobCancelled) {
			t.Fatalf("Wait of a cancelled job: want ErrJobCancelled, got %v", err)
		}
		_, err = c.Cancel(ctx(t), queued.ID)
		var apiErr *APIError
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 409 || apiErr.Code != "job_finished" {
			t.Fatalf("second cancel: want 409 job_finished, got %v", err)
		}
		if _, err := c.Wait(ctx(t), slow.ID); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ImagesAndRouting", func(t *testing.T) {
		images, err := c.Images(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(images) != 1 || images[0].Name != "host" || !images[0].Default || images[0].Runtime != "native" ||
			len(images[0].Arches) != 1 || images[0].DefaultArch != images[0].Arches[0] || images[0].Python == nil {
			t.Fatalf("want the one native image host, got %+v", images)
		}
		out, err := c.Run(ctx(t), Request{Code: "pass", Image: "host", Arch: images[0].DefaultArch})
		if err != nil {
			t.Fatal(err)
		}
		if out.Image == nil || *out.Image != "host" || out.Arch == nil || *out.Arch != images[0].DefaultArch {
			t.Fatalf("want the outcome to name host and %s, got %+v", images[0].DefaultArch, out)
		}
		_, err = c.Run(ctx(t), Request{Code: "pass", Image: "nope"})
		var apiErr *APIError
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Code != "unknown_image" {
			t.Fatalf("want 400 unknown_image, got %v", err)
		}
	})

	t.Run("Unauthorized", func(t *testing.T) {
		bad := newClient(t, s, "wrong")
		_, err := bad.Run(ctx(t), Request{Code: "pass"})
		var apiErr *APIError
		if !errors.As(err, &apiErr) {
			t.Fatalf("want *APIError, got %v", err)
		}
		if apiErr.StatusCode != 401 || apiErr.Code != "unauthorized" || len(apiErr.TraceID) != 32 {
			t.Fatalf("want 401 unauthorized with a trace id, got %+v", apiErr)
		}
	})

	t.Run("RateLimitRetryAfter", func(t *testing.T) {
		tight := newClient(t, s, tokenTight)
		if _, err := tight.Submit(ctx(t), Request{Code: "pass"}); err != nil {
			t.Fatal(err)
		}
		_, err := tight.Submit(ctx(t), Request{Code: "pass"})
		var apiErr *APIError
		if !errors.As(err, &apiErr) {
			t.Fatalf("want *APIError, got %v", err)
		}
		if apiErr.StatusCode != 429 || apiErr.Code != "rate_limit" || apiErr.RetryAfter < time.Second || apiErr.TraceID == "" {
			t.Fatalf("want 429 rate_limit with Retry-After, got %+v", apiErr)
		}
	})
}

func TestReadEvents(t *testing.T) {
	stream := ": keep-alive\n\nevent: status\ndata: {\"id\":\"x\",\"status\":\"running\"}\n\n" +
		"event: stdout\ndata: {\"data\":\"hi\\n\",\"encoding\":\"utf-8\"}\n\n" +
		"event: stderr\ndata: {\"data\":\"/w==\",\"encoding\":\"base64\"}\n\n" +
		"event: lagged\ndata: {\"missed_chunks\":3}\n\n" +
		"event: error\ndata: {\"code\":\"run_failed\",\ndata: \"message\":\"m\"}\n\n"
	var got []Event
	if err := readEvents(bytes.NewBufferString(stream), func(e Event) { got = append(got, e) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 || got[0].Status.Status != StatusRunning || got[4].Error == nil || got[4].Error.Code != "run_failed" {
		t.Fatalf("got %+v", got)
	}
	out, err := got[1].Chunk.Bytes()
	if err != nil || string(out) != "hi\n" || got[1].Type != "stdout" {
		t.Fatalf("stdout chunk %+v: %q %v", got[1], out, err)
	}
	errBytes, err := got[2].Chunk.Bytes()
	if err != nil || !bytes.Equal(errBytes, []byte{0xff}) || got[2].Type != "stderr" {
		t.Fatalf("stderr chunk %+v: %q %v", got[2], errBytes, err)
	}
	if got[3].Lagged == nil || got[3].Lagged.MissedChunks != 3 {
		t.Fatalf("lagged %+v", got[3])
	}
}
