package apiobjects

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

const (
	// DefaultTokenExpiration is the lifetime asked for when the projection
	// names none (the API's default for serviceAccountToken projections).
	DefaultTokenExpiration int64 = 3600
	// MinTokenExpiration is the shortest lifetime the TokenRequest API
	// grants.
	MinTokenExpiration int64 = 600

	// The kubelet's token manager rule: a token is replaced once 80% of its
	// lifetime has passed or it is 24h old, each less a random jitter of up
	// to 10s so the tokens of many pods are not requested in one burst.
	maxTokenAge    = 24 * time.Hour
	maxTokenJitter = 10 * time.Second
)

// tokenKey is what one token is cached per: a pod asks for a token per
// (audience, expiration) pair of its projections.
type tokenKey struct {
	UID               types.UID
	Audience          string
	ExpirationSeconds int64
}

type tokenEntry struct {
	mu       sync.Mutex // serialises requests for one key
	token    string
	expires  time.Time
	lifetime time.Duration // granted, which may be less than asked for
}

// Token returns a service account token for pod from the TokenRequest API
// (serviceaccounts/<spec.serviceAccountName>/token, bound to the pod by
// kind, name and UID, so it dies with the pod), for audience ("" is the API
// server's own audiences) and expirationSeconds (0 means 3600; less than
// 600 is refused, as the API refuses it). Tokens are cached per (pod UID,
// audience, expirationSeconds) and requested again on the kubelet's rule
// (needsRefresh); when that request fails the current token is returned
// until it expires.
func (s *Source) Token(ctx context.Context, pod *v1.Pod, audience string, expirationSeconds int64) (string, time.Time, error) {
	if pod == nil || pod.UID == "" || pod.Name == "" {
		return "", time.Time{}, errors.New("apiobjects: token for a pod without name or UID")
	}
	if expirationSeconds == 0 {
		expirationSeconds = DefaultTokenExpiration
	}
	if expirationSeconds < MinTokenExpiration {
		return "", time.Time{}, fmt.Errorf("apiobjects: pod %s/%s: token expirationSeconds %d is less than %d", pod.Namespace, pod.Name, expirationSeconds, MinTokenExpiration)
	}
	// The ServiceAccount admission plugin fills serviceAccountName in; a
	// pod that skipped admission means "default" all the same.
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	key := tokenKey{UID: pod.UID, Audience: audience, ExpirationSeconds: expirationSeconds}
	e := s.tokenEntry(key)
	e.mu.Lock()
	defer e.mu.Unlock()

	now := s.now()
	if e.token != "" && !needsRefresh(now, e.expires, e.lifetime, tokenJitter()) {
		return e.token, e.expires, nil
	}
	var auds []string
	if audience != "" {
		auds = []string{audience}
	}
	exp := expirationSeconds
	tr, err := s.createToken(ctx, pod.Namespace, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         auds,
			ExpirationSeconds: &exp,
			BoundObjectRef: &authenticationv1.BoundObjectReference{
				APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
			},
		},
	})
	if err == nil && (tr == nil || tr.Status.Token == "") {
		err = errors.New("the API server returned no token")
	}
	if err != nil {
		err = fmt.Errorf("apiobjects: token for serviceaccount %s/%s (pod %s, audience %q): %w", pod.Namespace, sa, pod.Name, audience, err)
		switch {
		case e.token == "":
			return "", time.Time{}, err
		case !now.Before(e.expires):
			return "", time.Time{}, fmt.Errorf("current token expired and refresh failed: %w", err)
		default:
			klog.ErrorS(err, "Could not refresh a service account token; using the current one", "pod", klog.KObj(pod), "expires", e.expires)
			return e.token, e.expires, nil
		}
	}
	// The API server may grant less than asked for
	// (--service-account-max-token-expiration); its answer's spec says how
	// much, and the refresh rule runs on that.
	granted := exp
	if tr.Spec.ExpirationSeconds != nil {
		granted = *tr.Spec.ExpirationSeconds
	}
	e.token, e.expires, e.lifetime = tr.Status.Token, tr.Status.ExpirationTimestamp.Time, time.Duration(granted)*time.Second
	klog.V(4).InfoS("Got a service account token", "pod", klog.KObj(pod), "serviceAccount", sa, "audience", audience, "expires", e.expires)
	return e.token, e.expires, nil
}

func (s *Source) tokenEntry(k tokenKey) *tokenEntry {
	s.tokenMu.Lock()
	defer s.tokenMu.Unlock()
	e := s.tokens[k]
	if e == nil {
		e = &tokenEntry{}
		s.tokens[k] = e
	}
	return e
}

// needsRefresh is the kubelet's rule (pkg/kubelet/token/token_manager.go):
// a token issued at expires-lifetime is replaced once it is older than 24h,
// or once less than 20% of its lifetime is left, each moved earlier by
// jitter.
func needsRefresh(now, expires time.Time, lifetime, jitter time.Duration) bool {
	issued := expires.Add(-lifetime)
	if now.After(issued.Add(maxTokenAge - jitter)) {
		return true
	}
	return now.After(expires.Add(-lifetime/5 - jitter))
}

// tokenJitter is whole seconds in [0, 10s), as the kubelet draws it.
func tokenJitter() time.Duration {
	return time.Duration(rand.IntN(int(maxTokenJitter/time.Second))) * time.Second
}

// sweepTokens drops expired tokens (pods that went without Forget), as the
// kubelet's token manager does each minute.
func (s *Source) sweepTokens() {
	now := s.now()
	s.tokenMu.Lock()
	defer s.tokenMu.Unlock()
	for k, e := range s.tokens {
		// TryLock: an entry being refreshed right now is not expired.
		if !e.mu.TryLock() {
			continue
		}
		// An entry without a token is a failed first request (or one about
		// to be made, which then only repeats its request next time).
		if e.token == "" || !now.Before(e.expires) {
			delete(s.tokens, k)
		}
		e.mu.Unlock()
	}
}
