package kubeletapi

// Authorization as the kubelet's Webhook mode: a SubjectAccessReview per
// (user, attributes), answers cached. Hand-written for the reason given in
// authn.go.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
)

// The kubelet's defaults: authorization.webhook.cacheAuthorizedTTL and
// cacheUnauthorizedTTL. Errors are not cached.
const (
	allowedTTL = 5 * time.Minute
	deniedTTL  = 30 * time.Second
)

// sarAuthorizer authorizes with SubjectAccessReviews against the API
// server.
type sarAuthorizer struct {
	review     func(context.Context, *authorizationv1.SubjectAccessReview) (*authorizationv1.SubjectAccessReview, error)
	backoff    wait.Backoff
	allowedTTL time.Duration
	deniedTTL  time.Duration
	cache      *ttlCache[authorizationv1.SubjectAccessReviewStatus]
}

func newSARAuthorizer(review func(context.Context, *authorizationv1.SubjectAccessReview) (*authorizationv1.SubjectAccessReview, error), now func() time.Time) *sarAuthorizer {
	return &sarAuthorizer{
		review:     review,
		backoff:    webhookBackoff,
		allowedTTL: allowedTTL,
		deniedTTL:  deniedTTL,
		cache:      newTTLCache[authorizationv1.SubjectAccessReviewStatus](now),
	}
}

// sarSpec is the review of a: the kubelet's attributes are always a
// resource request on a cluster-scoped node.
func sarSpec(a attributes) authorizationv1.SubjectAccessReviewSpec {
	s := authorizationv1.SubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb:        a.Verb,
			Version:     "v1",
			Resource:    a.Resource,
			Subresource: a.Subresource,
			Name:        a.Name,
		},
	}
	if u := a.User; u != nil {
		s.User, s.UID, s.Groups = u.Name, u.UID, u.Groups
		if u.Extra != nil {
			s.Extra = map[string]authorizationv1.ExtraValue{}
			for k, v := range u.Extra {
				s.Extra[k] = v
			}
		}
	}
	return s
}

func (z *sarAuthorizer) authorize(ctx context.Context, a attributes) (decision, string, error) {
	spec := sarSpec(a)
	b, err := json.Marshal(spec)
	if err != nil {
		return decisionNoOpinion, "", err
	}
	key := string(b)
	st, ok := z.cache.get(key)
	if !ok {
		ctx, cancel := context.WithTimeout(ctx, reviewTimeout)
		defer cancel()
		var result *authorizationv1.SubjectAccessReview
		err := withBackoff(ctx, z.backoff, func() error {
			var err error
			result, err = z.review(ctx, &authorizationv1.SubjectAccessReview{Spec: spec})
			return err
		})
		if err != nil {
			klog.ErrorS(err, "SubjectAccessReview failed")
			return decisionNoOpinion, "", err
		}
		st = result.Status
		if st.Allowed {
			z.cache.set(key, st, z.allowedTTL)
		} else {
			z.cache.set(key, st, z.deniedTTL)
		}
	}
	switch {
	case st.Denied && st.Allowed:
		return decisionDeny, st.Reason, fmt.Errorf("webhook subject access review returned both allow and deny response")
	case st.Denied:
		return decisionDeny, st.Reason, nil
	case st.Allowed:
		return decisionAllow, st.Reason, nil
	}
	return decisionNoOpinion, st.Reason, nil
}
