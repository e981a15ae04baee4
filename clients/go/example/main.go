// Command example is a tiny Go service that evaluates Python expressions
// through pyward: GET /eval?expr=2**100 answers with the value, or the
// verdict when the expression failed or hit a limit.
//
//	pyward serve &
//	go run ./example -listen 127.0.0.1:8081
//	curl '127.0.0.1:8081/eval?expr=sum(range(10))'
//
// With -expr it evaluates one expression and exits (a CLI).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	pyward "pyward.dev/client"
)

func main() {
	server := flag.String("server", "http://127.0.0.1:8080", "the pyward server")
	token := flag.String("token", os.Getenv("PYWARD_TOKEN"), "bearer token (default $PYWARD_TOKEN)")
	listen := flag.String("listen", "127.0.0.1:8081", "where this service listens")
	expr := flag.String("expr", "", "evaluate this expression, print it and exit")
	flag.Parse()

	client, err := pyward.New(*server, pyward.WithToken(*token))
	if err != nil {
		log.Fatal(err)
	}
	if *expr != "" {
		value, err := eval(context.Background(), client, *expr)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(value)
		return
	}
	http.HandleFunc("/eval", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		value, err := eval(ctx, client, r.URL.Query().Get("expr"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		fmt.Fprintln(w, value)
	})
	log.Printf("listening on http://%s", *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}

// eval runs print(repr(EXPR)) in the sandbox with tight limits; the
// expression arrives on stdin, so it is never spliced into code.
func eval(ctx context.Context, client *pyward.Client, expr string) (string, error) {
	out, err := client.Run(ctx, pyward.Request{
		Code:   "import sys; print(repr(eval(sys.stdin.read(), {'__builtins__': __builtins__})))",
		Stdin:  expr,
		Limits: &pyward.Limits{WallTime: "2s", Memory: "64MiB"},
	})
	if err != nil {
		return "", err // an *pyward.APIError for 4xx/5xx: StatusCode, Code, TraceID, RetryAfter
	}
	if out.Verdict != pyward.VerdictOK {
		stderr, _ := out.StderrBytes()
		return "", fmt.Errorf("%s: %s", out.Verdict, stderr)
	}
	stdout, err := out.StdoutBytes()
	return strings.TrimSuffix(string(stdout), "\n"), err
}
