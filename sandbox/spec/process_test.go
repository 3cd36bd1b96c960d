package spec

import (
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestCommand(t *testing.T) {
	tests := []struct {
		name            string
		command, args   []string
		entrypoint, cmd []string
		want            []string
		wantErr         bool
	}{
		{name: "image entrypoint and cmd", entrypoint: []string{"/ep"}, cmd: []string{"c1", "c2"}, want: []string{"/ep", "c1", "c2"}},
		{name: "image cmd only", cmd: []string{"/bin/sh", "-c", "x"}, want: []string{"/bin/sh", "-c", "x"}},
		{name: "image entrypoint only", entrypoint: []string{"/ep", "-v"}, want: []string{"/ep", "-v"}},
		{name: "args replace cmd, keep entrypoint", args: []string{"a"}, entrypoint: []string{"/ep"}, cmd: []string{"c"}, want: []string{"/ep", "a"}},
		{name: "args without image", args: []string{"/bin/true"}, want: []string{"/bin/true"}},
		{name: "command drops entrypoint and cmd", command: []string{"/cmd"}, entrypoint: []string{"/ep"}, cmd: []string{"c"}, want: []string{"/cmd"}},
		{name: "command and args", command: []string{"/cmd"}, args: []string{"a", "b"}, entrypoint: []string{"/ep"}, cmd: []string{"c"}, want: []string{"/cmd", "a", "b"}},
		{name: "empty-string entrypoint means none", entrypoint: []string{""}, cmd: []string{"/c"}, want: []string{"/c"}},
		{name: "empty-string entrypoint with args", entrypoint: []string{""}, args: []string{"/a"}, want: []string{"/a"}},
		{name: "nothing at all", wantErr: true},
		{name: "empty-string entrypoint alone", entrypoint: []string{""}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &runtimeapi.ContainerConfig{Command: tt.command, Args: tt.args}
			got, err := Command(cfg, &v1.Config{Entrypoint: tt.entrypoint, Cmd: tt.cmd})
			if tt.wantErr {
				if err == nil || !IsInvalidArgument(err) {
					t.Fatalf("want a field error, got %v (%q)", err, got)
				}
				if err.Error()[:8] != "command:" {
					t.Errorf("error %q does not name the field", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	// A nil image config is an empty one.
	if got, err := Command(&runtimeapi.ContainerConfig{Command: []string{"x"}}, nil); err != nil || !slices.Equal(got, []string{"x"}) {
		t.Errorf("nil image: %q %v", got, err)
	}
}

func kv(k, v string) *runtimeapi.KeyValue { return &runtimeapi.KeyValue{Key: k, Value: []byte(v)} }

func TestEnv(t *testing.T) {
	tests := []struct {
		name     string
		img      []string
		cri      []*runtimeapi.KeyValue
		hostname string
		want     []string
	}{
		{name: "defaults", hostname: "pod1", want: []string{"PATH=" + DefaultPath, "HOSTNAME=pod1"}},
		{name: "no hostname", want: []string{"PATH=" + DefaultPath}},
		{
			name: "image path replaces default in place", img: []string{"PATH=/x", "A=1"}, hostname: "h",
			want: []string{"PATH=/x", "HOSTNAME=h", "A=1"},
		},
		{
			name: "cri overrides image", img: []string{"A=1", "B=2"}, cri: []*runtimeapi.KeyValue{kv("B", "3"), kv("C", "4=5")},
			want: []string{"PATH=" + DefaultPath, "A=1", "B=3", "C=4=5"},
		},
		{
			name: "cri may override HOSTNAME", hostname: "h", cri: []*runtimeapi.KeyValue{kv("HOSTNAME", "x")},
			want: []string{"PATH=" + DefaultPath, "HOSTNAME=x"},
		},
		{
			name: "empty value and duplicate cri keys", cri: []*runtimeapi.KeyValue{kv("E", ""), kv("E", "2")},
			want: []string{"PATH=" + DefaultPath, "E=2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Env(&runtimeapi.ContainerConfig{Envs: tt.cri}, &v1.Config{Env: tt.img}, tt.hostname)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWorkingDir(t *testing.T) {
	for _, tt := range []struct {
		cri, img, want string
		wantErr        bool
	}{
		{cri: "", img: "", want: "/"}, {cri: "", img: "/img", want: "/img"}, {cri: "/cri", img: "/img", want: "/cri"},
		{cri: "/a/../b/", want: "/b"},
		{cri: "rel", wantErr: true}, {cri: "0", img: "/img", wantErr: true},
		{img: "app", want: "/app"}, {img: "../x", want: "/x"},
	} {
		got, err := WorkingDir(&runtimeapi.ContainerConfig{WorkingDir: tt.cri}, &v1.Config{WorkingDir: tt.img})
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("WorkingDir(%q, %q) = %q, %v; want %q (error %v)", tt.cri, tt.img, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !IsInvalidArgument(err) {
			t.Errorf("WorkingDir(%q): %v is not an InvalidArgument field error", tt.cri, err)
		}
	}
}
