package image

import (
	"context"
	"sync"
)

// flight shares one execution of fn among concurrent callers with the same
// key, like x/sync/singleflight, but context-aware: the work runs on its own
// context, which is cancelled only when every caller has gone. A caller
// whose ctx ends leaves without killing the work for the others; the last
// one to leave cancels the work and waits for it to finish.
type flight struct {
	mu    sync.Mutex
	calls map[string]*call
}

type call struct {
	done    chan struct{}
	val     any
	err     error
	waiters int
	cancel  context.CancelFunc
}

func (f *flight) Do(ctx context.Context, key string, fn func(context.Context) (any, error)) (any, error) {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]*call{}
	}
	c := f.calls[key]
	if c == nil {
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c = &call{done: make(chan struct{}), cancel: cancel}
		f.calls[key] = c
		go func() {
			c.val, c.err = fn(wctx)
			f.mu.Lock()
			if f.calls[key] == c {
				delete(f.calls, key)
			}
			f.mu.Unlock()
			cancel()
			close(c.done)
		}()
	}
	c.waiters++
	f.mu.Unlock()
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		f.mu.Lock()
		last := false
		if c.waiters--; c.waiters == 0 {
			last = true
			c.cancel()
			if f.calls[key] == c {
				delete(f.calls, key)
			}
		}
		f.mu.Unlock()
		if last {
			// The work is ours alone now: wait for it to clean up (it
			// sees the cancellation promptly) so nothing outlives the call.
			<-c.done
		}
		return nil, context.Cause(ctx)
	}
}
