package volumes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestOpenBeneathRefusesEscapes(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600)
	os.MkdirAll(filepath.Join(root, "ok/dir"), 0o755)
	os.WriteFile(filepath.Join(root, "ok/file"), []byte("f"), 0o644)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("/", filepath.Join(root, "to-root")))
	must(os.Symlink("/etc", filepath.Join(root, "abs-etc")))
	must(os.Symlink(filepath.Join(root, "ok"), filepath.Join(root, "abs-inside"))) // absolute, even though it points inside
	must(os.Symlink("../../"+filepath.Base(outside), filepath.Join(root, "ok/up")))
	must(os.Symlink("dir", filepath.Join(root, "ok/rel-inside")))
	must(os.Symlink("/proc/self/root", filepath.Join(root, "magic")))

	cases := []struct {
		sub string
		ok  bool
	}{
		{"ok", true},
		{"ok/file", true},
		{"ok/rel-inside", true},
		{"new/made/here", true},
		{".", true},
		{"to-root", false},
		{"to-root/etc/passwd", false},
		{"abs-etc", false},
		{"abs-inside", false},
		{"ok/up/secret", false},
		{"../x", false},
		{"ok/../../x", false},
		{"/etc", false},
		{"magic", false},
		{"to-root/new/dir", false},
	}
	for _, tc := range cases {
		t.Run(tc.sub, func(t *testing.T) {
			fd, err := openBeneath(root, tc.sub)
			if err == nil {
				unix.Close(fd)
			}
			if (err == nil) != tc.ok {
				t.Fatalf("openBeneath(%q) err = %v, want ok=%v", tc.sub, err, tc.ok)
			}
		})
	}
	if st, err := os.Stat(filepath.Join(root, "new/made/here")); err != nil || !st.IsDir() {
		t.Error("missing subPath dirs not created")
	}
	if _, err := os.Stat("/new"); err == nil {
		t.Error("something was created outside the volume")
	}
}

// Missing subPath dirs get the volume root's mode, setgid and sticky
// included, whatever the umask (the kubelet: GetMode, then SafeMakeDir): an
// fsGroup emptyDir on tmpfs (3777) gives drwxrwsrwt subPaths.
func TestOpenBeneathMakesDirsWithRootMode(t *testing.T) {
	old := unix.Umask(0o077)
	t.Cleanup(func() { unix.Umask(old) })
	cases := []struct {
		name string
		root os.FileMode // chmod bits
		want os.FileMode
	}{
		{name: "0755", root: 0o755, want: os.ModeDir | 0o755},
		{name: "emptyDir 0777", root: 0o777, want: os.ModeDir | 0o777},
		{name: "fsGroup emptyDir 2777", root: os.ModeSetgid | 0o777, want: os.ModeDir | os.ModeSetgid | 0o777},
		{name: "fsGroup tmpfs 3777", root: os.ModeSetgid | os.ModeSticky | 0o777, want: os.ModeDir | os.ModeSetgid | os.ModeSticky | 0o777},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.Chmod(root, tc.root); err != nil {
				t.Fatal(err)
			}
			os.Mkdir(filepath.Join(root, "there"), 0o700)
			there, _ := os.Lstat(filepath.Join(root, "there"))
			fd, err := openBeneath(root, "there/test-sub/deeper")
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(fd)
			for _, p := range []string{"there/test-sub", "there/test-sub/deeper"} {
				if st, err := os.Lstat(filepath.Join(root, p)); err != nil || st.Mode() != tc.want {
					t.Errorf("%s: %v (%v), want %v", p, st.Mode(), err, tc.want)
				}
			}
			if st, _ := os.Lstat(filepath.Join(root, "there")); st.Mode() != there.Mode() {
				t.Errorf("an existing dir was changed: %v", st.Mode())
			}
		})
	}
}

func TestExpandSubPathExpr(t *testing.T) {
	env := map[string]string{"POD": "web-0", "NS": "prod", "EMPTY": "", "UP": ".."}
	cases := []struct {
		expr, want, err string
	}{
		{"$(POD)", "web-0", ""},
		{"logs/$(NS)/$(POD)", "logs/prod/web-0", ""},
		{"a$$(POD)", "a$(POD)", ""},
		{"$(MISSING)", "", "missing value for MISSING"},
		{"$(EMPTY)/x", "", "missing value for EMPTY"},
		{"$(UP)/etc", "", "'..'"},
		{"/$(POD)", "", "relative"},
		{"$(B)/$(A)/$(B)", "", "missing value for A, B"}, // each name once, sorted
		{"$(POD", "$(POD", ""},                           // unclosed: literal
	}
	for _, tc := range cases {
		got, err := expandSubPathExpr(tc.expr, env)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: got %q, %v; want error %q", tc.expr, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.expr, got, err, tc.want)
		}
	}
}

// subPathExpr expands against the container's own environment
// (downward.Environment): envFrom counts, missing objects are errors unless
// optional.
func TestSubPathExprEnvironment(t *testing.T) {
	yes := true
	objs := &Objects{
		ConfigMaps: map[string]*v1.ConfigMap{"prod/cfg": {Data: map[string]string{"dir": "logs", "tier": "web"}}},
		Secrets:    map[string]*v1.Secret{"prod/sec": {Data: map[string][]byte{"shard": []byte("s1")}}},
	}
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "prod"}, Status: v1.PodStatus{PodIP: "10.0.0.5"}}
	cfgFrom := v1.EnvFromSource{Prefix: "CFG_", ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}}
	cmKey := func(name, cm, key string, opt *bool) v1.EnvVar {
		return v1.EnvVar{Name: name, ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{
			LocalObjectReference: v1.LocalObjectReference{Name: cm}, Key: key, Optional: opt}}}
	}
	field := func(name, path string) v1.EnvVar {
		return v1.EnvVar{Name: name, ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: path}}}
	}
	cases := []struct {
		name    string
		from    []v1.EnvFromSource
		env     []v1.EnvVar
		expr    string
		want    string
		wantErr string
	}{
		{name: "envFrom ConfigMap with prefix", from: []v1.EnvFromSource{cfgFrom}, env: []v1.EnvVar{field("POD", "metadata.name")},
			expr: "$(CFG_dir)/$(CFG_tier)/$(POD)", want: "logs/web/web-0"},
		{name: "envFrom Secret", from: []v1.EnvFromSource{{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "sec"}}}},
			expr: "$(shard)", want: "s1"},
		{name: "env expanded against envFrom", from: []v1.EnvFromSource{cfgFrom}, env: []v1.EnvVar{{Name: "D", Value: "$(CFG_dir)-x"}},
			expr: "$(D)", want: "logs-x"},
		{name: "configMapKeyRef", env: []v1.EnvVar{cmKey("T", "cfg", "tier", nil)}, expr: "t/$(T)", want: "t/web"},
		{name: "pod IP from the pod's status", env: []v1.EnvVar{field("IP", "status.podIP")}, expr: "$(IP)", want: "10.0.0.5"},
		{name: "missing non-optional configMapKeyRef", env: []v1.EnvVar{cmKey("T", "nocm", "tier", nil)}, expr: "$(T)",
			wantErr: `environment for subPathExpr: configmap "nocm" not found`},
		{name: "missing non-optional key", env: []v1.EnvVar{cmKey("T", "cfg", "nokey", nil)}, expr: "$(T)",
			wantErr: "couldn't find key nokey in ConfigMap prod/cfg"},
		{name: "missing non-optional envFrom", from: []v1.EnvFromSource{{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "nocm"}}}},
			expr: "x", wantErr: `configmap "nocm" not found`},
		{name: "optional missing configMapKeyRef leaves the variable unset", env: []v1.EnvVar{cmKey("T", "nocm", "tier", &yes)}, expr: "a/$(T)",
			wantErr: `subPathExpr "a/$(T)": missing value for T`},
		{name: "optional missing key leaves the variable unset", env: []v1.EnvVar{cmKey("T", "cfg", "nokey", &yes)}, expr: "$(T)",
			wantErr: "missing value for T"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &v1.Container{Name: "app", EnvFrom: tc.from, Env: tc.env,
				VolumeMounts: []v1.VolumeMount{{Name: "v", MountPath: "/v", SubPathExpr: tc.expr}}}
			p := pod.DeepCopy()
			p.Spec.Containers = []v1.Container{*c}
			got, err := func() (string, error) {
				env, err := containerEnv(p, c, objs)
				if err != nil {
					return "", err
				}
				return expandSubPathExpr(tc.expr, env)
			}()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %q, %v; want error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
