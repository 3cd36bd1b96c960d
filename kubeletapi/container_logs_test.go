package kubeletapi

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
)

func TestDecodeLogOptions(t *testing.T) {
	sinceTime := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	tests := []struct {
		query   string
		want    v1.PodLogOptions
		wantErr bool
	}{
		{query: "", want: v1.PodLogOptions{}},
		{query: "follow=true&timestamps=1&previous=false", want: v1.PodLogOptions{Follow: true, Timestamps: true}},
		// A bool is true unless "0" or "false", even when empty.
		{query: "follow=&previous=FALSE&timestamps=0", want: v1.PodLogOptions{Follow: true}},
		{query: "follow=yes&follow=false", want: v1.PodLogOptions{Follow: true}},
		{query: "tailLines=10&limitBytes=100&sinceSeconds=5", want: v1.PodLogOptions{TailLines: ptr.To[int64](10), LimitBytes: ptr.To[int64](100), SinceSeconds: ptr.To[int64](5)}},
		{query: "tail=7", want: v1.PodLogOptions{TailLines: ptr.To[int64](7)}},
		{query: "tail=all&tailLines=3", want: v1.PodLogOptions{}},
		{query: "sinceTime=2026-01-02T03:04:05Z", want: v1.PodLogOptions{SinceTime: &sinceTime}},
		{query: "stream=Stdout", want: v1.PodLogOptions{Stream: ptr.To("Stdout")}},
		{query: "tailLines=ten", wantErr: true},
		{query: "limitBytes=1.5", wantErr: true},
		{query: "sinceTime=yesterday", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeLogOptions(q)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if g, w := fmt.Sprintf("%+v", logOptionsString(got)), fmt.Sprintf("%+v", logOptionsString(&tt.want)); g != w {
				t.Errorf("got  %s\nwant %s", g, w)
			}
		})
	}
}

// logOptionsString shows the pointers' values.
func logOptionsString(o *v1.PodLogOptions) string {
	p := func(i *int64) string {
		if i == nil {
			return "nil"
		}
		return fmt.Sprint(*i)
	}
	st, s := "nil", "nil"
	if o.SinceTime != nil {
		st = o.SinceTime.UTC().Format(time.RFC3339)
	}
	if o.Stream != nil {
		s = *o.Stream
	}
	return fmt.Sprintf("follow=%v previous=%v timestamps=%v tail=%s limit=%s sinceSeconds=%s sinceTime=%s stream=%s",
		o.Follow, o.Previous, o.Timestamps, p(o.TailLines), p(o.LimitBytes), p(o.SinceSeconds), st, s)
}

func TestValidateLogOptions(t *testing.T) {
	now := metav1.Now()
	tests := []struct {
		name string
		o    v1.PodLogOptions
		ok   bool
	}{
		{"empty", v1.PodLogOptions{}, true},
		{"tail 0", v1.PodLogOptions{TailLines: ptr.To[int64](0)}, true},
		{"tail negative", v1.PodLogOptions{TailLines: ptr.To[int64](-1)}, false},
		{"limitBytes 0", v1.PodLogOptions{LimitBytes: ptr.To[int64](0)}, false},
		{"sinceSeconds 0", v1.PodLogOptions{SinceSeconds: ptr.To[int64](0)}, false},
		{"both since", v1.PodLogOptions{SinceSeconds: ptr.To[int64](1), SinceTime: &now}, false},
		{"stream All", v1.PodLogOptions{Stream: ptr.To(v1.LogStreamAll), TailLines: ptr.To[int64](1)}, true},
		{"stream bogus", v1.PodLogOptions{Stream: ptr.To("Both")}, false},
		{"stream Stdout with tail", v1.PodLogOptions{Stream: ptr.To(v1.LogStreamStdout), TailLines: ptr.To[int64](1)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := validateLogOptions(&tt.o)
			if (len(errs) == 0) != tt.ok {
				t.Errorf("errors %v, want ok=%v", errs, tt.ok)
			}
		})
	}
}

func TestLogTarget(t *testing.T) {
	term := func(id string) *v1.ContainerStateTerminated {
		return &v1.ContainerStateTerminated{ContainerID: id}
	}
	tests := []struct {
		name     string
		cs       v1.ContainerStatus
		previous bool
		want     logContainer
		wantErr  string
	}{
		{
			name: "running",
			cs:   v1.ContainerStatus{ContainerID: "cri://b", RestartCount: 1, State: v1.ContainerState{Running: &v1.ContainerStateRunning{}}, LastTerminationState: v1.ContainerState{Terminated: term("cri://a")}},
			want: logContainer{fullID: "cri://b", id: "b", attempt: 1},
		},
		{
			name:     "previous",
			cs:       v1.ContainerStatus{ContainerID: "cri://b", RestartCount: 1, State: v1.ContainerState{Running: &v1.ContainerStateRunning{}}, LastTerminationState: v1.ContainerState{Terminated: term("cri://a")}},
			previous: true,
			want:     logContainer{fullID: "cri://a", id: "a", attempt: 0},
		},
		{
			name:     "previous without one",
			cs:       v1.ContainerStatus{ContainerID: "cri://a", State: v1.ContainerState{Running: &v1.ContainerStateRunning{}}},
			previous: true,
			wantErr:  `previous terminated container "c" in pod "p" not found`,
		},
		{
			// Crash loop: waiting to restart, the newest instance is the
			// last termination.
			name:     "previous in back-off",
			cs:       v1.ContainerStatus{ContainerID: "cri://c", RestartCount: 2, State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}, LastTerminationState: v1.ContainerState{Terminated: term("cri://c")}},
			previous: true,
			want:     logContainer{fullID: "cri://c", id: "c", attempt: 2},
		},
		{
			name: "back-off without previous",
			cs:   v1.ContainerStatus{ContainerID: "cri://c", RestartCount: 2, State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}, LastTerminationState: v1.ContainerState{Terminated: term("cri://c")}},
			want: logContainer{fullID: "cri://c", id: "c", attempt: 2},
		},
		{
			name: "terminated",
			cs:   v1.ContainerStatus{ContainerID: "cri://a", State: v1.ContainerState{Terminated: term("cri://a")}},
			want: logContainer{fullID: "cri://a", id: "a"},
		},
		{
			name: "terminated without id",
			cs:   v1.ContainerStatus{RestartCount: 1, State: v1.ContainerState{Terminated: term("")}, LastTerminationState: v1.ContainerState{Terminated: term("cri://a")}},
			want: logContainer{fullID: "cri://a", id: "a", attempt: 0},
		},
		{
			name:    "terminated, no id anywhere",
			cs:      v1.ContainerStatus{State: v1.ContainerState{Terminated: term("")}},
			wantErr: `container "c" in pod "p" is terminated`,
		},
		{
			name:    "image pull",
			cs:      v1.ContainerStatus{State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ErrImagePull"}}},
			wantErr: `container "c" in pod "p" is waiting to start: image can't be pulled`,
		},
		{
			name:    "image pull back-off",
			cs:      v1.ContainerStatus{State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ImagePullBackOff"}}},
			wantErr: `container "c" in pod "p" is waiting to start: trying and failing to pull image`,
		},
		{
			name:    "creating",
			cs:      v1.ContainerStatus{State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ContainerCreating"}}},
			wantErr: `container "c" in pod "p" is waiting to start: ContainerCreating`,
		},
		{
			name:    "no state",
			cs:      v1.ContainerStatus{},
			wantErr: `container "c" in pod "p" is waiting to start - no logs yet`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cs.Name = "c"
			pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Status: v1.PodStatus{InitContainerStatuses: []v1.ContainerStatus{tt.cs}}}
			got, err := logTarget(pod, "c", tt.previous)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.want.name = "c"
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	t.Run("not available", func(t *testing.T) {
		_, err := logTarget(&v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}}, "c", false)
		if err == nil || err.Error() != `container "c" in pod "p" is not available` {
			t.Errorf("err = %v", err)
		}
	})
}

// criLine is one line of a CRI log file.
func criLine(ts time.Time, stream, tag, msg string) string {
	return ts.UTC().Format("2006-01-02T15:04:05.000000000Z07:00") + " " + stream + " " + tag + " " + msg + "\n"
}

// logFixture is a pod "p" in "ns" with container "c": attempt 1 running
// (id "new", its log where the runtime says), attempt 0 exited (id "old",
// gone from the runtime, its log only in the pod's log directory).
type logFixture struct {
	rt     *fakeRuntime
	pods   *fakePods
	srv    *Server
	http   *httptest.Server
	newLog string
}

var t0 = time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)

func newLogFixture(t *testing.T) *logFixture {
	t.Helper()
	dir := t.TempDir()
	pods := &fakePods{logDir: dir, pods: []v1.Pod{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u1"},
		Spec:       v1.PodSpec{Containers: []v1.Container{{Name: "c"}, {Name: "w"}}},
		Status: v1.PodStatus{ContainerStatuses: []v1.ContainerStatus{
			{
				Name: "c", ContainerID: "cri://new", RestartCount: 1,
				State:                v1.ContainerState{Running: &v1.ContainerStateRunning{}},
				LastTerminationState: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ContainerID: "cri://old"}},
			},
			{Name: "w", State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ContainerCreating"}}},
		}},
	}}}
	cdir := filepath.Join(pods.LogDir(&pods.pods[0]), "c")
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		t.Fatal(err)
	}
	old := criLine(t0, "stdout", "F", "old 1") + criLine(t0.Add(time.Second), "stderr", "F", "old 2")
	if err := os.WriteFile(filepath.Join(cdir, "0.log"), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	cur := criLine(t0.Add(1*time.Second), "stdout", "F", "line 1") +
		criLine(t0.Add(2*time.Second), "stderr", "F", "line 2") +
		criLine(t0.Add(3*time.Second), "stdout", "P", "part") +
		criLine(t0.Add(3500*time.Millisecond), "stdout", "F", "ial 3") +
		criLine(t0.Add(4*time.Second), "stdout", "F", "line 4")
	newLog := filepath.Join(cdir, "1.log")
	if err := os.WriteFile(newLog, []byte(cur), 0o644); err != nil {
		t.Fatal(err)
	}
	rt := &fakeRuntime{containers: map[string]*runtimeapi.ContainerStatus{
		"new": {Id: "new", State: runtimeapi.ContainerState_CONTAINER_RUNNING, LogPath: newLog},
	}}
	s, err := newTestServer(rt, pods, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := httptest.NewServer(s.handler)
	t.Cleanup(h.Close)
	t.Cleanup(s.stop)
	return &logFixture{rt: rt, pods: pods, srv: s, http: h, newLog: newLog}
}

func (f *logFixture) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(f.http.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestContainerLogs(t *testing.T) {
	f := newLogFixture(t)
	ts := func(d time.Duration) string { return t0.Add(d).Format("2006-01-02T15:04:05.000000000Z07:00") + " " }
	tests := []struct {
		name  string
		path  string
		code  int
		body  string
		setup func(*testing.T, *logFixture)
	}{
		{name: "all", path: "/containerLogs/ns/p/c", code: 200, body: "line 1\nline 2\npartial 3\nline 4\n"},
		{
			name: "timestamps: one per line, partial lines joined",
			path: "/containerLogs/ns/p/c?timestamps=true", code: 200,
			body: ts(time.Second) + "line 1\n" + ts(2*time.Second) + "line 2\n" + ts(3*time.Second) + "partial 3\n" + ts(4*time.Second) + "line 4\n",
		},
		// tailLines counts lines of the file, as the kubelet does: a
		// partial line is one.
		{name: "tail 1", path: "/containerLogs/ns/p/c?tailLines=1", code: 200, body: "line 4\n"},
		{name: "tail 2", path: "/containerLogs/ns/p/c?tailLines=2", code: 200, body: "ial 3\nline 4\n"},
		{name: "tail 0", path: "/containerLogs/ns/p/c?tailLines=0", code: 200, body: ""},
		{name: "tail all", path: "/containerLogs/ns/p/c?tail=all", code: 200, body: "line 1\nline 2\npartial 3\nline 4\n"},
		{name: "legacy tail", path: "/containerLogs/ns/p/c?tail=1", code: 200, body: "line 4\n"},
		{name: "sinceTime", path: "/containerLogs/ns/p/c?sinceTime=" + url.QueryEscape(t0.Add(3*time.Second).Format(time.RFC3339)), code: 200, body: "partial 3\nline 4\n"},
		{name: "limitBytes", path: "/containerLogs/ns/p/c?limitBytes=8", code: 200, body: "line 1\nl"},
		{name: "limitBytes with timestamps", path: "/containerLogs/ns/p/c?limitBytes=32&timestamps=1", code: 200, body: (ts(time.Second) + "line 1\n")[:32]},
		{name: "previous: from the pod's log directory", path: "/containerLogs/ns/p/c?previous=true", code: 200, body: "old 1\nold 2\n"},
		{name: "previous with follow ends", path: "/containerLogs/ns/p/c?previous=true&follow=true", code: 200, body: "old 1\nold 2\n"},
		{name: "no such pod", path: "/containerLogs/ns/nope/c", code: 404, body: `pod "nope" does not exist`},
		{name: "no such container", path: "/containerLogs/ns/p/x", code: 404, body: `container "x" not found in pod "p"`},
		{name: "waiting container", path: "/containerLogs/ns/p/w", code: 400, body: `container "w" in pod "p" is waiting to start: ContainerCreating`},
		{name: "previous of a first instance", path: "/containerLogs/ns/p/w?previous=1", code: 400, body: `previous terminated container "w" in pod "p" not found`},
		{name: "undecodable", path: "/containerLogs/ns/p/c?tailLines=x", code: 400, body: `{"message": "Unable to decode query."}`},
		{name: "invalid", path: "/containerLogs/ns/p/c?tailLines=-1", code: 422, body: `{"message": "Invalid request."}`},
		{name: "invalid since", path: "/containerLogs/ns/p/c?sinceSeconds=1&sinceTime=2026-01-01T00:00:00Z", code: 422, body: `{"message": "Invalid request."}`},
		{name: "split streams are off", path: "/containerLogs/ns/p/c?stream=Stdout", code: 400, body: `unable to return the given log stream: "Stdout". Please enable PodLogsQuerySplitStreams feature gate in kubelet`},
		{name: "stream All", path: "/containerLogs/ns/p/c?stream=All&tailLines=1", code: 200, body: "line 4\n"},
		{
			name: "log file gone",
			path: "/containerLogs/ns/p/c?previous=true", code: 200,
			body: "unable to retrieve container logs for cri://old",
			setup: func(t *testing.T, f *logFixture) {
				if err := os.Remove(filepath.Join(filepath.Dir(f.newLog), "0.log")); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup(t, f)
			}
			code, body := f.get(t, tt.path)
			if code != tt.code || body != tt.body {
				t.Errorf("got %d %q\nwant %d %q", code, body, tt.code, tt.body)
			}
		})
	}
}

func TestContainerLogsSinceSeconds(t *testing.T) {
	f := newLogFixture(t)
	now := time.Now()
	content := criLine(now.Add(-time.Hour), "stdout", "F", "an hour ago") + criLine(now.Add(-time.Second), "stdout", "F", "just now")
	if err := os.WriteFile(f.newLog, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	code, body := f.get(t, "/containerLogs/ns/p/c?sinceSeconds=60")
	if code != 200 || body != "just now\n" {
		t.Errorf("got %d %q", code, body)
	}
}

func TestCRILogOptions(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	early, late := metav1.NewTime(now.Add(-time.Hour)), metav1.NewTime(now.Add(-time.Second))
	tests := []struct {
		name string
		o    v1.PodLogOptions
		want time.Time
	}{
		{"none", v1.PodLogOptions{}, time.Time{}},
		{"sinceSeconds", v1.PodLogOptions{SinceSeconds: ptr.To[int64](10)}, now.Add(-10 * time.Second)},
		{"sinceTime", v1.PodLogOptions{SinceTime: &early}, early.Time},
		{"later wins: time", v1.PodLogOptions{SinceSeconds: ptr.To[int64](10), SinceTime: &late}, late.Time},
		{"later wins: seconds", v1.PodLogOptions{SinceSeconds: ptr.To[int64](10), SinceTime: &early}, now.Add(-10 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := criLogOptions(&tt.o, now).Since; !got.Equal(tt.want) {
				t.Errorf("since = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestContainerLogsFollow follows a running container's log while it is
// appended to, until the runtime reports the container exited.
func TestContainerLogsFollow(t *testing.T) {
	f := newLogFixture(t)
	resp, err := http.Get(f.http.URL + "/containerLogs/ns/p/c?follow=true&tailLines=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string)
	go func() {
		defer close(lines)
		r := bufio.NewReader(resp.Body)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			lines <- l
		}
	}()
	next := func() (string, bool) {
		select {
		case l, ok := <-lines:
			return l, ok
		case <-time.After(10 * time.Second):
			t.Fatal("no log line within 10s")
		}
		return "", false
	}
	if l, _ := next(); l != "line 4\n" {
		t.Fatalf("first line %q", l)
	}
	appendLine := func(s string) {
		fh, err := os.OpenFile(f.newLog, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		if _, err := fh.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	appendLine(criLine(t0.Add(5*time.Second), "stdout", "P", "half "))
	appendLine(criLine(t0.Add(6*time.Second), "stdout", "F", "and half"))
	if l, _ := next(); l != "half and half\n" {
		t.Fatalf("appended line %q", l)
	}
	f.rt.setState("new", runtimeapi.ContainerState_CONTAINER_EXITED)
	appendLine(criLine(t0.Add(7*time.Second), "stderr", "F", "last words"))
	if l, _ := next(); l != "last words\n" {
		t.Fatalf("line after exit %q", l)
	}
	if l, ok := next(); ok {
		t.Fatalf("still following after the container exited: %q", l)
	}
}

// TestContainerLogsFollowStops: a followed log ends with the request or
// when the server shuts down.
func TestContainerLogsFollowStops(t *testing.T) {
	t.Run("request ends", func(t *testing.T) {
		f := newLogFixture(t)
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.http.URL+"/containerLogs/ns/p/c?follow=1&tailLines=0", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		// Close waits for the handlers in flight: it returns once the
		// log handler has.
		done := make(chan struct{})
		go func() { f.http.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("log handler still running 10s after its request ended")
		}
	})
	t.Run("server stops", func(t *testing.T) {
		f := newLogFixture(t)
		resp, err := http.Get(f.http.URL + "/containerLogs/ns/p/c?follow=1&tailLines=0")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		f.srv.stop()
		done := make(chan error, 1)
		go func() { _, err := io.ReadAll(resp.Body); done <- err }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("followed log still open 10s after the server started stopping")
		}
	})
}

func TestContainerLogsRelativeLogPath(t *testing.T) {
	f := newLogFixture(t)
	f.rt.containers["new"].LogPath = filepath.Join("c", "1.log")
	code, body := f.get(t, "/containerLogs/ns/p/c?tailLines=1")
	if code != 200 || !strings.HasSuffix(body, "line 4\n") {
		t.Errorf("got %d %q", code, body)
	}
}
