package control

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestStreamWriterAfterFinish(t *testing.T) {
	rec := httptest.NewRecorder()
	sw := newStreamWriter(rec)
	if err := sw.send(&PingReply{SchemaVersion: 1, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	sw.finish()
	if err := sw.send(&PingReply{SchemaVersion: 1, Seq: 2}); !errors.Is(err, errStreamFinished) {
		t.Errorf("send after finish: %v, want errStreamFinished", err)
	}
	if err := sw.start(); !errors.Is(err, errStreamFinished) {
		t.Errorf("start after finish: %v", err)
	}
	body := rec.Body.String()
	if strings.Count(body, "\n") != 1 || !strings.Contains(body, `"seq":1`) {
		t.Errorf("body %q, want exactly the first line", body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("Content-Type %q", ct)
	}
}
