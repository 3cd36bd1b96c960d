package apiobjects

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNeedsRefresh(t *testing.T) {
	expires := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	hour := time.Hour
	day := 24 * time.Hour
	cases := []struct {
		name     string
		now      time.Time
		lifetime time.Duration
		jitter   time.Duration
		want     bool
	}{
		{name: "fresh", now: expires.Add(-hour), lifetime: hour, want: false},
		{name: "just under 80%", now: expires.Add(-12*time.Minute - time.Second), lifetime: hour, want: false},
		{name: "past 80%", now: expires.Add(-12*time.Minute + time.Second), lifetime: hour, want: true},
		{name: "jitter moves it earlier", now: expires.Add(-12*time.Minute - 5*time.Second), lifetime: hour, jitter: 9 * time.Second, want: true},
		{name: "expired", now: expires.Add(time.Second), lifetime: hour, want: true},
		// A long-lived token (the API server may grant a year) is replaced
		// after a day all the same.
		{name: "year-long token, a day old", now: expires.Add(-365*day + day + time.Second), lifetime: 365 * day, want: true},
		{name: "year-long token, under a day old", now: expires.Add(-365*day + day - time.Second), lifetime: 365 * day, want: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := needsRefresh(tc.now, expires, tc.lifetime, tc.jitter); got != tc.want {
				t.Errorf("needsRefresh = %v, want %v", got, tc.want)
			}
		})
	}
}

// stubTokens answers TokenRequests with numbered tokens, granting what is
// asked unless grant is set.
type stubTokens struct {
	now      *time.Time
	n        int
	grant    int64
	fail     error
	requests []string
}

func (st *stubTokens) create(_ context.Context, ns, sa string, tr *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	ref := tr.Spec.BoundObjectRef
	st.requests = append(st.requests, fmt.Sprintf("%s/%s aud=%v exp=%d bound=%s/%s/%s/%s", ns, sa, tr.Spec.Audiences, *tr.Spec.ExpirationSeconds, ref.APIVersion, ref.Kind, ref.Name, ref.UID))
	if st.fail != nil {
		return nil, st.fail
	}
	st.n++
	out := tr.DeepCopy()
	if st.grant != 0 {
		out.Spec.ExpirationSeconds = &st.grant
	}
	out.Status = authenticationv1.TokenRequestStatus{
		Token:               fmt.Sprintf("token-%d", st.n),
		ExpirationTimestamp: metav1.NewTime(st.now.Add(time.Duration(*out.Spec.ExpirationSeconds) * time.Second)),
	}
	return out, nil
}

func TestToken(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start
	s := testSource(&now)
	st := &stubTokens{now: &now}
	s.createToken = st.create
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u1"}, Spec: v1.PodSpec{ServiceAccountName: "robot"}}
	bound := "bound=v1/Pod/p/u1"

	steps := []struct {
		name         string
		at           time.Duration // since start
		pod          *v1.Pod
		audience     string
		exp          int64
		change       func()
		want         string
		wantExpires  time.Duration // since start
		wantRequests []string
		wantErr      string
	}{
		{name: "first: requested, bound to the pod, default lifetime", exp: 0,
			want: "token-1", wantExpires: time.Hour, wantRequests: []string{"ns/robot aud=[] exp=3600 " + bound}},
		{name: "cached", at: 30 * time.Minute, want: "token-1", wantExpires: time.Hour},
		{name: "another audience is another token", at: 30 * time.Minute, audience: "vault", exp: 3600,
			want: "token-2", wantExpires: 90 * time.Minute, wantRequests: []string{"ns/robot aud=[vault] exp=3600 " + bound}},
		{name: "past 80% of its lifetime: a new one", at: 49 * time.Minute, want: "token-3", wantExpires: 109 * time.Minute,
			wantRequests: []string{"ns/robot aud=[] exp=3600 " + bound}},
		{name: "refresh fails: the current token while it lasts", at: 99 * time.Minute, change: func() { st.fail = errors.New("apiserver down") },
			want: "token-3", wantExpires: 109 * time.Minute, wantRequests: []string{"ns/robot aud=[] exp=3600 " + bound}},
		{name: "refresh fails after expiry: error", at: 110 * time.Minute,
			wantErr: "expired and refresh failed", wantRequests: []string{"ns/robot aud=[] exp=3600 " + bound}},
		{name: "recovered; the server grants less than asked: refresh follows the grant", at: 110 * time.Minute,
			change: func() { st.fail, st.grant = nil, 600 }, exp: 7200,
			want: "token-4", wantExpires: 120 * time.Minute, wantRequests: []string{"ns/robot aud=[] exp=7200 " + bound}},
		// Taken as the 7200s asked for, the token would be due at 96m.
		{name: "…so it is kept at 116m", at: 116 * time.Minute, exp: 7200, want: "token-4", wantExpires: 120 * time.Minute},
		{name: "…and replaced past 80% of 600s", at: 118*time.Minute + 10*time.Second, exp: 7200,
			want: "token-5", wantExpires: 128*time.Minute + 10*time.Second, wantRequests: []string{"ns/robot aud=[] exp=7200 " + bound}},
		{name: "no service account name: default", at: 200 * time.Minute, change: func() { st.grant = 0 },
			pod:  &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "q", UID: "u2"}},
			want: "token-6", wantExpires: 260 * time.Minute, wantRequests: []string{"ns/default aud=[] exp=3600 bound=v1/Pod/q/u2"}},
		{name: "under 600s refused without a request", exp: 599, wantErr: "less than 600"},
		{name: "a pod without UID", pod: &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "r"}}, wantErr: "without name or UID"},
	}
	for _, step := range steps {
		now = start.Add(step.at)
		if step.change != nil {
			step.change()
		}
		p := pod
		if step.pod != nil {
			p = step.pod
		}
		tok, exp, err := s.Token(context.Background(), p, step.audience, step.exp)
		switch {
		case step.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), step.wantErr) {
				t.Errorf("%s: err = %v, want %q", step.name, err, step.wantErr)
			}
		case err != nil:
			t.Errorf("%s: %v", step.name, err)
		case tok != step.want || !exp.Equal(start.Add(step.wantExpires)):
			t.Errorf("%s: %s expiring %s, want %s expiring %s", step.name, tok, exp.Sub(start), step.want, step.wantExpires)
		}
		if !reflect.DeepEqual(st.requests, step.wantRequests) && !(len(st.requests) == 0 && len(step.wantRequests) == 0) {
			t.Errorf("%s: requests %v, want %v", step.name, st.requests, step.wantRequests)
		}
		st.requests = nil
	}

	// Forget drops the pod's tokens; the sweep drops expired ones.
	s.Forget(pod)
	for k := range s.tokens {
		if k.UID == pod.UID {
			t.Errorf("token %v left after Forget", k)
		}
	}
	now = start.Add(261 * time.Minute)
	s.sweepTokens()
	if len(s.tokens) != 0 {
		t.Errorf("expired tokens left after the sweep: %v", s.tokens)
	}
}
