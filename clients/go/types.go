package client

import (
	"encoding/base64"
	"fmt"
)

// Request is the body of POST /v1/runs and POST /v1/jobs (docs/API.md, "The
// run request"). Give either Code or Entrypoint (one of Files). The server
// refuses unknown fields, so this struct has exactly the contract's fields.
type Request struct {
	Code        string            `json:"code,omitempty"`
	Files       []File            `json:"files,omitempty"`
	Entrypoint  string            `json:"entrypoint,omitempty"`
	Args        []string          `json:"args,omitempty"`
	Stdin       string            `json:"stdin,omitempty"`
	StdinBase64 string            `json:"stdin_base64,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
	Policy      string            `json:"policy,omitempty"`
	Limits      *Limits           `json:"limits,omitempty"`
	// Outputs are paths in the work dir to bring back after the run (in
	// Outcome.Files, in this order): relative, no "." or ".." component.
	Outputs []string `json:"outputs,omitempty"`
	// Image is a name from Images(); empty for the tenant's default.
	Image string `json:"image,omitempty"`
	// Arch is ArchAMD64 or ArchARM64, one of the image's Arches; empty for
	// the image's DefaultArch.
	Arch string `json:"arch,omitempty"`
}

// Architectures.
const (
	ArchAMD64 = "amd64"
	ArchARM64 = "arm64"
)

// Image is one entry of GET /v1/images (docs/API.md, "Images").
type Image struct {
	Name        string   `json:"name"`
	Default     bool     `json:"default"`
	Runtime     string   `json:"runtime"`
	Arches      []string `json:"arches"`
	DefaultArch string   `json:"default_arch"`
	// Python is the interpreter's version ("3.11.2"), nil when unknown.
	Python *string `json:"python"`
}

// File is one file of the work dir: Text or Base64, never both. Use
// TextFile and BinaryFile to build one.
type File struct {
	Path   string  `json:"path"`
	Text   *string `json:"text,omitempty"`
	Base64 *string `json:"base64,omitempty"`
}

// TextFile is a file holding text.
func TextFile(path, text string) File { return File{Path: path, Text: &text} }

// BinaryFile is a file holding arbitrary bytes (sent as base64).
func BinaryFile(path string, data []byte) File {
	s := base64.StdEncoding.EncodeToString(data)
	return File{Path: path, Base64: &s}
}

// WithStdinBytes sets the program's stdin to arbitrary bytes.
func (r Request) WithStdinBytes(data []byte) Request {
	r.Stdin = ""
	r.StdinBase64 = base64.StdEncoding.EncodeToString(data)
	return r
}

// Limits may only tighten the policy's. Durations are strings such as
// "500ms" or "2s", sizes strings such as "64MiB"; zero values are omitted.
type Limits struct {
	WallTime  string   `json:"wall_time,omitempty"`
	CPUTime   string   `json:"cpu_time,omitempty"`
	Memory    string   `json:"memory,omitempty"`
	FileSize  string   `json:"file_size,omitempty"`
	Output    string   `json:"output,omitempty"`
	Tmpfs     string   `json:"tmpfs,omitempty"`
	Pids      int      `json:"pids,omitempty"`
	OpenFiles int      `json:"open_files,omitempty"`
	CPUs      *float64 `json:"cpus,omitempty"`
}

// Verdict says why a run ended (docs/API.md, "Verdicts").
type Verdict string

// The verdicts of the contract.
const (
	VerdictOK                Verdict = "ok"
	VerdictRuntimeError      Verdict = "runtime_error"
	VerdictSignaled          Verdict = "signaled"
	VerdictTimeout           Verdict = "timeout"
	VerdictCPULimit          Verdict = "cpu_limit"
	VerdictMemoryLimit       Verdict = "memory_limit"
	VerdictOutputLimit       Verdict = "output_limit"
	VerdictPidsLimit         Verdict = "pids_limit"
	VerdictSecurityViolation Verdict = "security_violation"
	VerdictSandboxError      Verdict = "sandbox_error"
)

// IsLimit reports whether the verdict is one of the resource limits.
func (v Verdict) IsLimit() bool {
	switch v {
	case VerdictTimeout, VerdictCPULimit, VerdictMemoryLimit, VerdictOutputLimit, VerdictPidsLimit:
		return true
	}
	return false
}

// Encoding of a stream: "utf-8" or "base64".
const (
	EncodingUTF8   = "utf-8"
	EncodingBase64 = "base64"
)

// Outcome is the outcome object (docs/API.md, "The outcome object").
// Read the streams with StdoutBytes and StderrBytes, which undo the base64
// encoding the server uses for bytes that are not UTF-8.
type Outcome struct {
	Verdict         Verdict `json:"verdict"`
	ExitCode        *int    `json:"exit_code"`
	Signal          *int    `json:"signal"`
	SignalName      *string `json:"signal_name"`
	Stdout          string  `json:"stdout"`
	StdoutEncoding  string  `json:"stdout_encoding"`
	StdoutTruncated bool    `json:"stdout_truncated"`
	Stderr          string  `json:"stderr"`
	StderrEncoding  string  `json:"stderr_encoding"`
	StderrTruncated bool    `json:"stderr_truncated"`
	Usage           Usage   `json:"usage"`
	Message         *string `json:"message"`
	// Image and Arch say where the run ran; nil in outcomes stored by an
	// older server.
	Image *string `json:"image"`
	Arch  *string `json:"arch"`
	// Files holds one entry per path of Request.Outputs, in order.
	Files []OutputFile `json:"files"`
	// LimitsReached names every limit the run reached ("wall_time",
	// "cpu_time", "memory", "pids", "output"), the one that ended it among
	// them; empty when none was, and in outcomes stored by an older server.
	LimitsReached []string `json:"limits_reached"`
	// TraceID is set on the answer of POST /v1/runs only.
	TraceID string `json:"trace_id,omitempty"`
}

// Statuses of an output file (docs/API.md, "Output files").
const (
	// FileOK: a regular file, read; Bytes gives its content.
	FileOK = "ok"
	// FileMissing: nothing at the path.
	FileMissing = "missing"
	// FileNotRegular: a directory, FIFO, socket, or a path through a symbolic link (never followed).
	FileNotRegular = "not_regular"
	// FileNotCollected: not read, because pyward stopped the run before the program ended.
	FileNotCollected = "not_collected"
)

// OutputFile is one declared output file of a run. Read its content with
// Bytes, which undoes the base64 encoding used for bytes that are not UTF-8.
type OutputFile struct {
	Path     string `json:"path"`
	Status   string `json:"status"`
	Content  string `json:"content"`
	Encoding string `json:"encoding"`
	// Size is the file's size when it was read; nil unless Status is FileOK.
	Size *int64 `json:"size"`
	// Truncated is true when the file held more than its cap: Content holds its first bytes.
	Truncated bool `json:"truncated"`
}

// Bytes is the exact bytes kept of the file (empty unless Status is FileOK).
func (f *OutputFile) Bytes() ([]byte, error) { return decodeStream(f.Content, f.Encoding) }

// File is the declared output file at path, or nil.
func (o *Outcome) File(path string) *OutputFile {
	for i := range o.Files {
		if o.Files[i].Path == path {
			return &o.Files[i]
		}
	}
	return nil
}

// Usage is what the run used.
type Usage struct {
	WallMS          int64 `json:"wall_ms"`
	CPUMS           int64 `json:"cpu_ms"`
	PeakMemoryBytes int64 `json:"peak_memory_bytes"`
}

// StdoutBytes is the exact bytes the program wrote to stdout.
func (o *Outcome) StdoutBytes() ([]byte, error) { return decodeStream(o.Stdout, o.StdoutEncoding) }

// StderrBytes is the exact bytes the program wrote to stderr.
func (o *Outcome) StderrBytes() ([]byte, error) { return decodeStream(o.Stderr, o.StderrEncoding) }

func decodeStream(s, encoding string) ([]byte, error) {
	switch encoding {
	case EncodingUTF8, "":
		return []byte(s), nil
	case EncodingBase64:
		return base64.StdEncoding.DecodeString(s)
	default:
		return nil, fmt.Errorf("pyward: unknown stream encoding %q", encoding)
	}
}

// Job statuses.
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusFinished  = "finished"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// Job is the job object (docs/API.md, "The job object").
type Job struct {
	ID           string    `json:"id"`
	Status       string    `json:"status"`
	CreatedAtMS  *int64    `json:"created_at_ms"`
	StartedAtMS  *int64    `json:"started_at_ms"`
	FinishedAtMS *int64    `json:"finished_at_ms"`
	Attempts     int       `json:"attempts"`
	Outcome      *Outcome  `json:"outcome"`
	Error        *JobError `json:"error"`
	TraceID      string    `json:"trace_id"`
}

// Terminal reports whether the job will not change any more.
func (j *Job) Terminal() bool {
	return j.Status == StatusFinished || j.Status == StatusFailed || j.Status == StatusCancelled
}

// JobError says why a failed job could not run.
type JobError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *JobError) Error() string { return "pyward: job failed: " + e.Code + ": " + e.Message }

// Event is one server-sent event of GET /v1/jobs/{id}/events. Type is
// "status", "stdout", "stderr", "lagged", "outcome" or "error"; the
// matching field is set (Chunk for both "stdout" and "stderr"). Data is the
// raw JSON, for event types this client does not know.
type Event struct {
	Type    string
	Status  *StatusEvent
	Chunk   *Chunk
	Lagged  *LaggedEvent
	Outcome *Outcome
	Error   *JobError
	Data    []byte
}

// Chunk is the data of a "stdout" or "stderr" event: a piece of a running
// job's output, in order after the stream's previous chunk. The chunks a
// client sees start when its stream saw the job running; the outcome holds
// the whole output.
type Chunk struct {
	Data     string `json:"data"`
	Encoding string `json:"encoding"`
}

// Bytes is the chunk's exact bytes (Data is base64 when they are not UTF-8).
func (c *Chunk) Bytes() ([]byte, error) { return decodeStream(c.Data, c.Encoding) }

// LaggedEvent is the data of a "lagged" event: the client read too slowly
// and the server dropped this many chunks for it (the outcome has them).
type LaggedEvent struct {
	MissedChunks int64 `json:"missed_chunks"`
}

// StatusEvent is the data of a "status" event.
type StatusEvent struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}
