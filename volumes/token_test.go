package volumes

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// testTokens is a TokenSource that hands out whatever token it is set to
// and records what it was asked for. Not an API server: the TokenRequest
// side is agent/apiobjects' and test/cluster's.
type testTokens struct {
	mu    sync.Mutex
	token string
	err   error
	asked []string
}

func (tt *testTokens) Token(_ context.Context, pod *v1.Pod, audience string, exp int64) (string, time.Time, error) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	tt.asked = append(tt.asked, string(pod.UID)+" aud="+audience+" exp="+strconv.FormatInt(exp, 10))
	if tt.err != nil {
		return "", time.Time{}, tt.err
	}
	return tt.token, time.Now().Add(time.Hour), nil
}

func (tt *testTokens) set(token string) {
	tt.mu.Lock()
	tt.token = token
	tt.mu.Unlock()
}

func i64(v int64) *int64 { return &v }

// kubeAPIAccess is the projected volume the ServiceAccount admission plugin
// adds to every pod.
func kubeAPIAccess(defMode *int32, audience string, exp *int64) *v1.ProjectedVolumeSource {
	return &v1.ProjectedVolumeSource{DefaultMode: defMode, Sources: []v1.VolumeProjection{
		{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "token", Audience: audience, ExpirationSeconds: exp}},
		{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "kube-root-ca.crt"},
			Items: []v1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
		{DownwardAPI: &v1.DownwardAPIProjection{Items: []v1.DownwardAPIVolumeFile{{Path: "namespace",
			FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
	}}
}

func TestProjectedServiceAccountToken(t *testing.T) {
	objs := testObjs()
	objs.ConfigMaps["ns/kube-root-ca.crt"] = &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: "ns"},
		Data: map[string]string{"ca.crt": "CA"}}
	cases := []struct {
		name      string
		src       *v1.ProjectedVolumeSource
		tokens    *testTokens // nil: no TokenSource
		want      map[string]string
		wantMode  os.FileMode
		wantAsked string
		wantErr   string
	}{
		{name: "kube-api-access: token, CA and namespace, default mode",
			src: kubeAPIAccess(nil, "", i64(3607)), tokens: &testTokens{token: "tok-1"},
			want:     map[string]string{"token": "tok-1", "ca.crt": "CA", "namespace": "ns"},
			wantMode: 0o644, wantAsked: "uid-1 aud= exp=3607"},
		{name: "defaultMode, audience; expiration left to the source",
			src: &v1.ProjectedVolumeSource{DefaultMode: i32(0o440), Sources: []v1.VolumeProjection{
				{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "vault/token", Audience: "vault"}}}},
			tokens: &testTokens{token: "tok-v"}, want: map[string]string{"vault/token": "tok-v"},
			wantMode: 0o440, wantAsked: "uid-1 aud=vault exp=0"},
		{name: "no TokenSource: says what is missing", src: kubeAPIAccess(nil, "", nil),
			wantErr: "projected source 0: serviceAccountToken needs an API server: run the agent as a node (agent.kubeconfig)"},
		{name: "the source fails: the error names the path", src: kubeAPIAccess(nil, "", nil),
			tokens: &testTokens{err: errors.New("forbidden")}, wantErr: `serviceAccountToken "token": forbidden`},
		{name: "a path that escapes", tokens: &testTokens{token: "x"},
			src: &v1.ProjectedVolumeSource{Sources: []v1.VolumeProjection{
				{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "../token"}}}},
			wantErr: "'..'"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ts TokenSource
			if tc.tokens != nil {
				ts = tc.tokens
			}
			p, err := projectedPayload(context.Background(), testPod(), tc.src, objs, ts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(p) != len(tc.want) {
				t.Fatalf("payload %v, want %v", p, tc.want)
			}
			for k, v := range tc.want {
				if string(p[k].Data) != v {
					t.Errorf("%s = %q, want %q", k, p[k].Data, v)
				}
			}
			// Written as the volume is: through the atomicWriter.
			dir := t.TempDir()
			if err := (&atomicWriter{dir: dir}).Write(p); err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				full := filepath.Join(dir, k)
				if got := mustRead(t, full); got != v {
					t.Errorf("file %s = %q, want %q", k, got, v)
				}
				if st, err := os.Stat(full); err != nil || st.Mode().Perm() != tc.wantMode {
					t.Errorf("file %s mode %v (%v), want %v", k, st.Mode().Perm(), err, tc.wantMode)
				}
			}
			if got := strings.Join(tc.tokens.asked, ";"); got != tc.wantAsked {
				t.Errorf("asked %q, want %q", got, tc.wantAsked)
			}
		})
	}
}

// A rotated token replaces the old one through the ..data swap; an
// unchanged one leaves the volume alone.
func TestTokenRotationSwapsData(t *testing.T) {
	tokens := &testTokens{token: "tok-1"}
	src := &v1.ProjectedVolumeSource{Sources: []v1.VolumeProjection{{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "token"}}}}
	dir := t.TempDir()
	w := &atomicWriter{dir: dir}
	steps := []struct {
		token    string
		wantSwap bool
	}{
		{token: "tok-1", wantSwap: true}, // the first write
		{token: "tok-1", wantSwap: false},
		{token: "tok-2", wantSwap: true},
	}
	prev := ""
	for i, st := range steps {
		tokens.set(st.token)
		p, err := projectedPayload(context.Background(), testPod(), src, nil, tokens)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(p); err != nil {
			t.Fatal(err)
		}
		cur := readLink(t, filepath.Join(dir, dataDirName))
		if (cur != prev) != st.wantSwap {
			t.Errorf("step %d: ..data %q → %q, swap wanted: %v", i, prev, cur, st.wantSwap)
		}
		if got := mustRead(t, filepath.Join(dir, "token")); got != st.token {
			t.Errorf("step %d: token %q, want %q", i, got, st.token)
		}
		prev = cur
	}
}

func TestReprojectDue(t *testing.T) {
	tokenVol := &volumeSpec{Kind: kindProjected, Source: v1.VolumeSource{Projected: kubeAPIAccess(nil, "", nil)}}
	plainProjected := &volumeSpec{Kind: kindProjected, Source: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{
		Sources: []v1.VolumeProjection{{Secret: &v1.SecretProjection{LocalObjectReference: v1.LocalObjectReference{Name: "s"}}}}}}}
	cm := &volumeSpec{Kind: kindConfigMap}
	emptyDir := &volumeSpec{Kind: kindEmptyDir}
	now := time.Now()
	cases := []struct {
		name string
		vs   *volumeSpec
		st   volState
		want bool
	}{
		{name: "token volume, just written", vs: tokenVol, st: volState{gen: 1, projected: now}, want: false},
		{name: "token volume, a period ago", vs: tokenVol, st: volState{gen: 1, projected: now.Add(-tokenResyncPeriod)}, want: true},
		{name: "token volume, objects changed", vs: tokenVol, st: volState{gen: 0, projected: now}, want: true},
		{name: "projected without token, a period ago", vs: plainProjected, st: volState{gen: 1, projected: now.Add(-time.Hour)}, want: false},
		{name: "configMap, objects changed", vs: cm, st: volState{gen: 0}, want: true},
		{name: "configMap, unchanged", vs: cm, st: volState{gen: 1}, want: false},
		{name: "emptyDir never", vs: emptyDir, st: volState{gen: 0}, want: false},
	}
	m := &Manager{objsGen: 1}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := m.reprojectDue(tc.vs, &tc.st); got != tc.want {
				t.Errorf("reprojectDue = %v, want %v", got, tc.want)
			}
		})
	}
}

// The Manager path: a pod's kube-api-access volume on tmpfs gets its token;
// Run writes the rotated token within a resync; without a TokenSource
// SetupPod fails with the reason.
func TestIntegrationProjectedTokenRotation(t *testing.T) {
	requireIntegration(t)
	oldToken, oldResync := tokenResyncPeriod, resyncPeriod
	tokenResyncPeriod, resyncPeriod = 200*time.Millisecond, 50*time.Millisecond
	t.Cleanup(func() { tokenResyncPeriod, resyncPeriod = oldToken, oldResync })

	e := newEnv(t)
	tokens := &testTokens{token: "tok-1"}
	e.opts.Tokens = tokens
	m := e.manager(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ca := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: "ns"}, Data: map[string]string{"ca.crt": "CA"}}
	objs := &Objects{ConfigMaps: map[string]*v1.ConfigMap{"ns/kube-root-ca.crt": ca}}
	vols := []v1.Volume{{Name: "kube-api-access", VolumeSource: v1.VolumeSource{Projected: kubeAPIAccess(i32(0o644), "", i64(3607))}}}
	c := v1.Container{Name: "app", VolumeMounts: []v1.VolumeMount{{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}}}
	pod := podWith("u-tok", "tok", vols, c)

	mounts, err := m.SetupPod(ctx, pod, objs)
	if err != nil {
		t.Fatal(err)
	}
	dir := mountFor(t, mounts, "app", "/var/run/secrets/kubernetes.io/serviceaccount").HostPath
	if ms, _ := mountsAt(dir); len(ms) != 1 || ms[0].FSType != "tmpfs" {
		t.Fatalf("token volume not on tmpfs: %+v", ms)
	}
	if got := mustRead(t, filepath.Join(dir, "token")); got != "tok-1" {
		t.Fatalf("token = %q", got)
	}
	first := readLink(t, filepath.Join(dir, dataDirName))

	go m.Run(ctx)
	tokens.set("tok-2")
	deadline := time.Now().Add(5 * time.Second)
	for mustRead(t, filepath.Join(dir, "token")) != "tok-2" {
		if time.Now().After(deadline) {
			t.Fatal("the rotated token was not written")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if readLink(t, filepath.Join(dir, dataDirName)) == first {
		t.Error("..data not swapped")
	}
	if got := mustRead(t, filepath.Join(dir, "ca.crt")); got != "CA" {
		t.Errorf("ca.crt after rotation = %q", got)
	}
	cancel()
	if err := m.TeardownPod(context.Background(), pod); err != nil {
		t.Fatal(err)
	}

	// No TokenSource: the pod's volume is not ready, and says why.
	e.opts.Tokens = nil
	m2 := e.manager(t)
	pod2 := podWith("u-tok2", "tok2", vols, c)
	if _, err := m2.SetupPod(context.Background(), pod2, objs); err == nil || !strings.Contains(err.Error(), "serviceAccountToken needs an API server") {
		t.Fatalf("SetupPod without Tokens: %v", err)
	}
	if err := m2.TeardownPod(context.Background(), pod2); err != nil {
		t.Fatal(err)
	}
}
