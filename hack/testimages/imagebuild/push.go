package imagebuild

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Pushed is one reference written by Push.
type Pushed struct {
	Ref    string // "127.0.0.1:5000/library/busybox:latest"
	Digest v1.Hash
}

// Transport is the HTTP transport for the local test registry: no proxy from
// the environment, no keep-alive games, short timeouts. Test traffic goes to
// 127.0.0.1 only.
func Transport() http.RoundTripper {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       30 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
	}
}

// RemoteOptions are the go-containerregistry options for talking to a local
// test registry: anonymous, plain HTTP, no proxy.
func RemoteOptions(ctx context.Context) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(authn.Anonymous),
		remote.WithTransport(Transport()),
	}
}

// Ref builds "registry/prefix+repo:tag" as a go-containerregistry reference
// that talks plain HTTP.
func Ref(registry, prefix, repo, tag string) (name.Tag, error) {
	return name.NewTag(registry+"/"+prefix+repo+":"+tag, name.Insecure, name.StrictValidation)
}

// Push writes every image of s to the registry at registry ("127.0.0.1:5000"),
// each repository name preceded by prefix (usually ""; "mirror/" gives
// "mirror/library/busybox"). The registry must be a local, plain-HTTP one.
func Push(ctx context.Context, s *Set, registry, prefix string) ([]Pushed, error) {
	return PushNamed(ctx, s.All(), registry, prefix)
}

// PushNamed writes the given images to the registry, as Push does.
func PushNamed(ctx context.Context, images []Named, registry, prefix string) ([]Pushed, error) {
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	opts := RemoteOptions(ctx)
	var out []Pushed
	for _, n := range images {
		ref, err := Ref(registry, prefix, n.Repo, n.Tag)
		if err != nil {
			return out, err
		}
		if n.Index != nil {
			err = remote.WriteIndex(ref, n.Index, opts...)
		} else {
			err = remote.Write(ref, n.Image, opts...)
		}
		if err != nil {
			return out, fmt.Errorf("push %s: %w", ref, err)
		}
		d, err := n.Digest()
		if err != nil {
			return out, err
		}
		out = append(out, Pushed{Ref: ref.String(), Digest: d})
	}
	return out, nil
}
