package kubeletapi

// Authentication as the kubelet's with anonymous auth off, the x509
// client CA and webhook token authentication on: a verified client
// certificate, else a bearer token checked by a TokenReview.
//
// Written here rather than taken from k8s.io/apiserver's delegating
// authenticator: that one would bring the whole apiserver module (CEL,
// OpenTelemetry, its metrics registry) into the agent for a hundred lines.

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/singleflight"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	asn1util "k8s.io/apimachinery/pkg/apis/asn1"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	"k8s.io/streaming/pkg/httpstream/wsstream"
)

// The kubelet's defaults: authentication.webhook.cacheTTL (2m) is used
// for both answers (the delegating authenticator caches a rejected token
// as long as an accepted one); errors are not cached.
const (
	tokenSuccessTTL = 2 * time.Minute
	tokenFailureTTL = 2 * time.Minute
	// reviewTimeout bounds one TokenReview or SubjectAccessReview,
	// retries included.
	reviewTimeout = 30 * time.Second
)

// webhookBackoff is the API server's DefaultAuthWebhookRetryBackoff, which
// the kubelet uses for both its reviews.
var webhookBackoff = wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5}

// Well-known user and group names (k8s.io/apiserver/pkg/authentication/user).
const (
	groupAllAuthenticated   = "system:authenticated"
	groupAllUnauthenticated = "system:unauthenticated"
	userAnonymous           = "system:anonymous"
	credentialIDKey         = "authentication.kubernetes.io/credential-id"
)

var errInvalidToken = errors.New("invalid bearer token")

// requestAuthenticator is the kubelet's union: x509 client certificate,
// then Authorization: Bearer, then a websocket bearer subprotocol; the
// first that accepts wins, and the user gains system:authenticated.
type requestAuthenticator struct {
	x509   bool // a client CA is configured, so the TLS layer verified any certificate
	tokens tokenAuthenticator
}

// tokenAuthenticator checks a bearer token.
type tokenAuthenticator interface {
	authenticateToken(ctx context.Context, token string) (*userInfo, bool, error)
}

func (a *requestAuthenticator) authenticate(r *http.Request) (*userInfo, bool, error) {
	var errs []error
	try := func(f func(*http.Request) (*userInfo, bool, error)) *userInfo {
		u, ok, err := f(r)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		if ok {
			return u
		}
		return nil
	}
	var u *userInfo
	if a.x509 {
		u = try(x509User)
	}
	if u == nil && a.tokens != nil {
		u = try(a.bearerToken)
	}
	if u == nil && a.tokens != nil {
		u = try(a.websocketToken)
	}
	if u == nil {
		return nil, false, utilerrors.NewAggregate(errs)
	}
	return withAuthenticatedGroup(u), true, nil
}

// x509User is the user of a verified client certificate: CN the name, O
// the groups (the API server's CommonNameUserConversion).
func x509User(r *http.Request) (*userInfo, bool, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil, false, nil
	}
	c := r.TLS.VerifiedChains[0][0]
	if c.Subject.CommonName == "" {
		return nil, false, nil
	}
	uid, err := certUID(c)
	if err != nil {
		return nil, false, err
	}
	fp := sha256.Sum256(c.Raw)
	return &userInfo{
		Name:   c.Subject.CommonName,
		UID:    uid,
		Groups: c.Subject.Organization,
		Extra:  map[string][]string{credentialIDKey: {"X509SHA256=" + hex.EncodeToString(fp[:])}},
	}, true, nil
}

// certUID is the user UID a certificate's subject may carry (beta
// AllowParsingUserUIDFromCertAuth, on by default).
func certUID(c *x509.Certificate) (string, error) {
	var uids []string
	for _, n := range c.Subject.Names {
		if !n.Type.Equal(asn1util.X509UID()) {
			continue
		}
		s, ok := n.Value.(string)
		if !ok {
			return "", fmt.Errorf("unable to parse UID into a string")
		}
		uids = append(uids, s)
	}
	switch {
	case len(uids) == 0:
		return "", nil
	case len(uids) != 1:
		return "", fmt.Errorf("expected 1 UID, but found multiple: %v", uids)
	case uids[0] == "":
		return "", errors.New("UID cannot be an empty string")
	}
	return uids[0], nil
}

// bearerToken authenticates "Authorization: Bearer <token>" and, once
// accepted, removes the header so that it never travels further (to the
// runtime's streaming server, say).
func (a *requestAuthenticator) bearerToken(r *http.Request) (*userInfo, bool, error) {
	auth := strings.TrimSpace(r.Header.Get("Authorization"))
	if auth == "" {
		return nil, false, nil
	}
	parts := strings.SplitN(auth, " ", 3)
	if len(parts) < 2 || !strings.EqualFold(parts[0], "bearer") {
		return nil, false, nil
	}
	token := parts[1]
	if token == "" {
		return nil, false, nil
	}
	u, ok, err := a.tokens.authenticateToken(r.Context(), token)
	if ok {
		r.Header.Del("Authorization")
	}
	if !ok && err == nil {
		err = errInvalidToken
	}
	return u, ok, err
}

const (
	wsProtocolHeader     = "Sec-Websocket-Protocol"
	bearerProtocolPrefix = "base64url.bearer.authorization.k8s.io."
)

// websocketToken authenticates a token passed as a websocket subprotocol
// (browsers cannot set headers on websockets), removing it once accepted.
func (a *requestAuthenticator) websocketToken(r *http.Request) (*userInfo, bool, error) {
	if !wsstream.IsWebSocketRequest(r) {
		return nil, false, nil
	}
	token := ""
	seen := false
	var others []string
	for _, h := range r.Header[wsProtocolHeader] {
		for _, p := range strings.Split(h, ",") {
			p = strings.TrimSpace(p)
			if !strings.HasPrefix(p, bearerProtocolPrefix) {
				others = append(others, p)
				continue
			}
			if seen {
				return nil, false, errors.New("multiple base64.bearer.authorization tokens specified")
			}
			seen = true
			b, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(p, bearerProtocolPrefix))
			if err != nil {
				return nil, false, errors.New("invalid base64.bearer.authorization token encoding")
			}
			if !utf8.Valid(b) {
				return nil, false, errors.New("invalid base64.bearer.authorization token")
			}
			token = string(b)
		}
	}
	if token != "" && len(others) == 0 {
		return nil, false, errors.New("missing additional subprotocol")
	}
	if token == "" {
		return nil, false, nil
	}
	u, ok, err := a.tokens.authenticateToken(r.Context(), token)
	if ok {
		r.Header.Set(wsProtocolHeader, strings.Join(others, ","))
	}
	if !ok && err == nil {
		err = errInvalidToken
	}
	return u, ok, err
}

// withAuthenticatedGroup adds system:authenticated to u's groups, as the
// API server's AuthenticatedGroupAdder does.
func withAuthenticatedGroup(u *userInfo) *userInfo {
	if u.Name == userAnonymous {
		return u
	}
	for _, g := range u.Groups {
		if g == groupAllAuthenticated || g == groupAllUnauthenticated {
			return u
		}
	}
	c := *u
	c.Groups = append(append(make([]string, 0, len(u.Groups)+1), u.Groups...), groupAllAuthenticated)
	return &c
}

// tokenReviewer authenticates bearer tokens with TokenReviews against the
// API server, caching answers: concurrent requests with one token share
// one review.
type tokenReviewer struct {
	review     func(context.Context, *authenticationv1.TokenReview) (*authenticationv1.TokenReview, error)
	backoff    wait.Backoff
	successTTL time.Duration
	failureTTL time.Duration
	cache      *ttlCache[tokenAnswer]
	flight     singleflight.Group
}

type tokenAnswer struct {
	u  *userInfo
	ok bool
}

func newTokenReviewer(review func(context.Context, *authenticationv1.TokenReview) (*authenticationv1.TokenReview, error), now func() time.Time) *tokenReviewer {
	return &tokenReviewer{
		review:     review,
		backoff:    webhookBackoff,
		successTTL: tokenSuccessTTL,
		failureTTL: tokenFailureTTL,
		cache:      newTTLCache[tokenAnswer](now),
	}
}

func (t *tokenReviewer) authenticateToken(ctx context.Context, token string) (*userInfo, bool, error) {
	sum := sha256.Sum256([]byte(token))
	key := string(sum[:])
	if a, ok := t.cache.get(key); ok {
		return a.u, a.ok, nil
	}
	ch := t.flight.DoChan(key, func() (any, error) {
		// Not the first caller's context: it may go away while others wait.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reviewTimeout)
		defer cancel()
		u, ok, err := t.reviewToken(ctx, token)
		if err != nil {
			return nil, err
		}
		a := tokenAnswer{u: u, ok: ok}
		if ok {
			t.cache.set(key, a, t.successTTL)
		} else {
			t.cache.set(key, a, t.failureTTL)
		}
		return a, nil
	})
	select {
	case <-ctx.Done():
		return nil, false, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, false, res.Err
		}
		a := res.Val.(tokenAnswer)
		return a.u, a.ok, nil
	}
}

// reviewToken is one TokenReview, retried on transient errors.
func (t *tokenReviewer) reviewToken(ctx context.Context, token string) (*userInfo, bool, error) {
	req := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}
	var result *authenticationv1.TokenReview
	err := withBackoff(ctx, t.backoff, func() error {
		var err error
		result, err = t.review(ctx, req)
		return err
	})
	if err != nil {
		klog.ErrorS(err, "TokenReview failed")
		return nil, false, err
	}
	st := result.Status
	if !st.Authenticated {
		if st.Error != "" {
			// An error, hence not cached (the API server's webhook
			// authenticator does the same).
			return nil, false, errors.New(st.Error)
		}
		return nil, false, nil
	}
	var extra map[string][]string
	if st.User.Extra != nil {
		extra = map[string][]string{}
		for k, v := range st.User.Extra {
			extra[k] = v
		}
	}
	return &userInfo{Name: st.User.Username, UID: st.User.UID, Groups: st.User.Groups, Extra: extra}, true, nil
}

// withBackoff calls f until it succeeds, fails for good, or the back-off
// runs out; it retries what the API server's webhooks retry (connection
// resets, 500, 504, 429, Retry-After).
func withBackoff(ctx context.Context, b wait.Backoff, f func() error) error {
	var last error
	err := wait.ExponentialBackoffWithContext(ctx, b, func(context.Context) (bool, error) {
		last = f()
		if shouldRetry(last) {
			return false, nil
		}
		return last == nil, last
	})
	switch {
	case last != nil:
		return last
	case err != nil:
		return fmt.Errorf("webhook call failed: %w", err)
	}
	return nil
}

func shouldRetry(err error) bool {
	if err == nil {
		return false
	}
	if utilnet.IsConnectionReset(err) || utilnet.IsHTTP2ConnectionLost(err) || apierrors.IsInternalError(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) {
		return true
	}
	_, retry := apierrors.SuggestsClientDelay(err)
	return retry
}
