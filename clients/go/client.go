// Package client calls a pyward server (`pyward serve`) over its HTTP API:
// sync runs, async jobs, their server-sent events, cancellation. The types
// mirror the JSON contract of docs/API.md field for field. Standard library
// only.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to one pyward server. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends `Authorization: Bearer token` on every request.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient uses hc instead of http.DefaultClient (timeouts, transport).
// A sync run lasts as long as the program: give hc no short Timeout, use
// the context instead.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// New makes a client of the server at baseURL, e.g. "http://127.0.0.1:8080".
func New(baseURL string, opts ...Option) (*Client, error) {
	base, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("pyward: bad base URL %q: %w", baseURL, err)
	}
	if base.Scheme != "http" && base.Scheme != "https" {
		return nil, fmt.Errorf("pyward: bad base URL %q: the scheme must be http or https", baseURL)
	}
	c := &Client{base: base, http: http.DefaultClient}
	for _, opt := range opts {
		opt(c)
	}
	return c, nil
}

// APIError is a 4xx or 5xx answer: the HTTP status and the body's error
// object. RetryAfter is set from the Retry-After header (429 and 503).
type APIError struct {
	StatusCode int
	Code       string
	Message    string
	TraceID    string
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("pyward: HTTP %d %s: %s (trace %s)", e.StatusCode, e.Code, e.Message, e.TraceID)
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(", retry after %s", e.RetryAfter)
	}
	return s
}

// ErrJobCancelled is returned by Wait for a job that was cancelled (with
// the outcome of what ran, for a job cancelled while it ran).
var ErrJobCancelled = errors.New("pyward: the job was cancelled")

// Run runs req now and returns its outcome (POST /v1/runs). Any verdict,
// a timeout included, is an outcome, not an error.
func (c *Client) Run(ctx context.Context, req Request) (*Outcome, error) {
	var out Outcome
	if err := c.do(ctx, http.MethodPost, "/v1/runs", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Images lists the images this tenant may use, its default first
// (GET /v1/images).
func (c *Client) Images(ctx context.Context) ([]Image, error) {
	var out struct {
		Images []Image `json:"images"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/images", nil, &out); err != nil {
		return nil, err
	}
	return out.Images, nil
}

// Submit stores req as an async job and returns it at once (POST /v1/jobs).
func (c *Client) Submit(ctx context.Context, req Request) (*Job, error) {
	var job Job
	if err := c.do(ctx, http.MethodPost, "/v1/jobs", req, &job); err != nil {
		return nil, err
	}
	return &job, nil
}

// Job returns the job, with its outcome once finished (GET /v1/jobs/{id}).
func (c *Client) Job(ctx context.Context, id string) (*Job, error) {
	var job Job
	if err := c.do(ctx, http.MethodGet, jobPath(id), nil, &job); err != nil {
		return nil, err
	}
	return &job, nil
}

// Cancel cancels a job (DELETE /v1/jobs/{id}) and returns it, `cancelled`.
// A queued job never runs; a running one has its sandbox killed, and the
// outcome of what ran is attached to the job shortly after (Wait returns it
// with ErrJobCancelled). A job already finished, failed or cancelled is an
// *APIError with status 409 and code "job_finished".
func (c *Client) Cancel(ctx context.Context, id string) (*Job, error) {
	var job Job
	if err := c.do(ctx, http.MethodDelete, jobPath(id), nil, &job); err != nil {
		return nil, err
	}
	return &job, nil
}

// Wait follows the job's events until it ends and returns its outcome. A
// failed job is a *JobError; a cancelled one is ErrJobCancelled, with the
// outcome of what ran when it was cancelled while running (nil otherwise).
func (c *Client) Wait(ctx context.Context, id string) (*Outcome, error) {
	var outcome *Outcome
	var failed *JobError
	cancelled := false
	err := c.Stream(ctx, id, func(e Event) {
		switch {
		case e.Outcome != nil:
			outcome = e.Outcome
		case e.Error != nil:
			failed = e.Error
		case e.Status != nil && e.Status.Status == StatusCancelled:
			cancelled = true
		}
	})
	if err != nil {
		return nil, err
	}
	switch {
	case cancelled:
		return outcome, ErrJobCancelled
	case outcome != nil:
		return outcome, nil
	case failed != nil:
		return nil, failed
	}
	// The stream ended early (a proxy, a restart): ask for the job itself.
	job, err := c.Job(ctx, id)
	if err != nil {
		return nil, err
	}
	switch {
	case job.Status == StatusCancelled:
		return job.Outcome, ErrJobCancelled
	case job.Outcome != nil:
		return job.Outcome, nil
	case job.Error != nil:
		return nil, job.Error
	}
	return nil, fmt.Errorf("pyward: the events of job %s ended while it was %s", id, job.Status)
}

// Stream calls fn with each server-sent event of the job (GET
// /v1/jobs/{id}/events), in order: status events; while the job runs,
// "stdout" and "stderr" events with its output as the program writes it
// (Event.Chunk), and "lagged" if this client read too slowly and missed
// some; then an outcome or error event when the job ends. It returns when
// the server ends the stream, or with the context's error. fn runs on the
// reading goroutine: a slow fn makes the client lag.
func (c *Client) Stream(ctx context.Context, id string, fn func(Event)) error {
	resp, err := c.send(ctx, http.MethodGet, jobPath(id)+"/events", nil, "text/event-stream")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return readEvents(resp.Body, fn)
}

// readEvents parses a text/event-stream: "event:" and "data:" lines, an
// empty line ends an event, lines starting with ":" are comments.
func readEvents(r io.Reader, fn func(Event)) error {
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 64*1024), 64*1024*1024)
	var typ string
	var data []string
	for scanner.Scan() {
		line := scanner.Text()
		if line == "" {
			if len(data) > 0 {
				if err := dispatch(typ, []byte(strings.Join(data, "\n")), fn); err != nil {
					return err
				}
			}
			typ, data = "", nil
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			typ = value
		case "data":
			data = append(data, value)
		}
	}
	return scanner.Err()
}

func dispatch(typ string, data []byte, fn func(Event)) error {
	if typ == "" {
		typ = "message"
	}
	e := Event{Type: typ, Data: data}
	var target interface{}
	switch typ {
	case "status":
		e.Status = &StatusEvent{}
		target = e.Status
	case "stdout", "stderr":
		e.Chunk = &Chunk{}
		target = e.Chunk
	case "lagged":
		e.Lagged = &LaggedEvent{}
		target = e.Lagged
	case "outcome":
		e.Outcome = &Outcome{}
		target = e.Outcome
	case "error":
		e.Error = &JobError{}
		target = e.Error
	}
	if target != nil {
		if err := json.Unmarshal(data, target); err != nil {
			return fmt.Errorf("pyward: bad %s event %q: %w", typ, data, err)
		}
	}
	fn(e)
	return nil
}

func jobPath(id string) string { return "/v1/jobs/" + url.PathEscape(id) }

// do sends body as JSON and decodes a 2xx answer into out.
func (c *Client) do(ctx context.Context, method, path string, body, out interface{}) error {
	resp, err := c.send(ctx, method, path, body, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("pyward: %s %s: bad answer: %w", method, path, err)
	}
	return nil
}

// send makes the request and returns the response of a 2xx; any other
// status becomes an *APIError (the body is read and closed).
func (c *Client) send(ctx context.Context, method, path string, body interface{}, accept string) (*http.Response, error) {
	var reader io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("pyward: encoding the request: %w", err)
		}
		reader = bytes.NewReader(raw)
	}
	u := *c.base
	u.Path += path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), reader)
	if err != nil {
		return nil, fmt.Errorf("pyward: %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", accept)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("pyward: %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, apiError(resp)
}

func apiError(resp *http.Response) *APIError {
	e := &APIError{StatusCode: resp.StatusCode, TraceID: resp.Header.Get("X-Trace-Id")}
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			TraceID string `json:"trace_id"`
		} `json:"error"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(raw, &body) == nil && body.Error.Code != "" {
		e.Code, e.Message = body.Error.Code, body.Error.Message
		if body.Error.TraceID != "" {
			e.TraceID = body.Error.TraceID
		}
	} else {
		e.Code, e.Message = "http_"+strconv.Itoa(resp.StatusCode), strings.TrimSpace(string(raw))
	}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs >= 0 {
		e.RetryAfter = time.Duration(secs) * time.Second
	}
	return e
}
