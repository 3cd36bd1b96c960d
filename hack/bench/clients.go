package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// clientCalls are the read-only calls the many-clients phase makes, in
// the order its table rows show them.
var clientCalls = []string{"ListPodSandbox", "ListContainers", "PodSandboxStatus", "ContainerStatus", "Status"}

// clientsResult is the many-clients phase: o.clients clients, each on its
// own connection (as many monitoring agents, crictl processes and a
// kubelet would be), calling the List and Status RPCs in a loop while
// o.churn pods start and stop.
type clientsResult struct {
	lat map[string][]float64 // per RPC, seconds
	// errs counts failed calls by "RPC: code"; a NotFound of a
	// PodSandboxStatus / ContainerStatus whose id a List returned an
	// instant before is the pod's removal racing the client (the kubelet
	// sees it too) and is counted apart, in raced.
	errs  map[string]int
	raced int
	churn float64 // wall time of the churn: all started, then all removed
}

func (c *clientsResult) calls() int {
	n := 0
	for _, xs := range c.lat {
		n += len(xs)
	}
	return n
}

func (c *clientsResult) errors() int {
	n := 0
	for _, v := range c.errs {
		n += v
	}
	return n
}

// manyClients runs the phase: the clients start, then o.churn pods are
// started (o.batch at a time) and removed (as many at a time), then the
// clients stop. A failed pod start or removal fails the phase; failed
// client calls are counted, not fatal, so the table shows them.
func manyClients(ctx context.Context, o options, rt *runtime) (*clientsResult, error) {
	res := &clientsResult{lat: map[string][]float64{}, errs: map[string]int{}}
	var mu sync.Mutex
	record := func(rpc string, d time.Duration, err error, byID bool) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			res.lat[rpc] = append(res.lat[rpc], d.Seconds())
		case byID && status.Code(err) == codes.NotFound:
			res.raced++
			res.lat[rpc] = append(res.lat[rpc], d.Seconds())
		default:
			res.errs[fmt.Sprintf("%s: %s", rpc, status.Code(err))]++
		}
	}

	stop := make(chan struct{})
	var clients sync.WaitGroup
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < o.clients; i++ {
		conn, cl, err := dialCRI(rt)
		if err != nil {
			close(stop)
			return nil, err
		}
		conns = append(conns, conn)
		// Connected before the clock runs, as a long-lived client is.
		if _, err := cl.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
			close(stop)
			return nil, fmt.Errorf("client %d: Version: %w", i, err)
		}
		clients.Add(1)
		go func(seed uint64) {
			defer clients.Done()
			rnd := rand.New(rand.NewPCG(seed, 1))
			var pods, ctrs []string
			for {
				select {
				case <-stop:
					return
				default:
				}
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				rpc := clientCalls[rnd.IntN(len(clientCalls))]
				start := time.Now()
				var err error
				byID := false
				switch rpc {
				case "ListPodSandbox":
					var r *runtimeapi.ListPodSandboxResponse
					if r, err = cl.ListPodSandbox(cctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
						pods = pods[:0]
						for _, p := range r.Items {
							pods = append(pods, p.Id)
						}
					}
				case "ListContainers":
					var r *runtimeapi.ListContainersResponse
					if r, err = cl.ListContainers(cctx, &runtimeapi.ListContainersRequest{}); err == nil {
						ctrs = ctrs[:0]
						for _, c := range r.Containers {
							ctrs = append(ctrs, c.Id)
						}
					}
				case "PodSandboxStatus":
					if len(pods) == 0 {
						cancel()
						continue
					}
					byID = true
					_, err = cl.PodSandboxStatus(cctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pods[rnd.IntN(len(pods))]})
				case "ContainerStatus":
					if len(ctrs) == 0 {
						cancel()
						continue
					}
					byID = true
					_, err = cl.ContainerStatus(cctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctrs[rnd.IntN(len(ctrs))]})
				case "Status":
					_, err = cl.Status(cctx, &runtimeapi.StatusRequest{})
				}
				d := time.Since(start)
				cancel()
				if errors.Is(ctx.Err(), context.Canceled) {
					return
				}
				record(rpc, d, err, byID)
				select {
				case <-stop:
					return
				case <-time.After(o.clientPause):
				}
			}
		}(uint64(i))
	}

	// The churn, on a connection of its own.
	start := time.Now()
	churnErr := churnPods(ctx, o, rt)
	res.churn = time.Since(start).Seconds()
	close(stop)
	clients.Wait()
	if churnErr != nil {
		return nil, churnErr
	}
	return res, nil
}

// churnPods starts o.churn pods, o.batch at a time (RunPodSandbox,
// CreateContainer, StartContainer), then stops and removes them as many at
// a time.
func churnPods(ctx context.Context, o options, rt *runtime) error {
	conn, cl, err := dialCRI(rt)
	if err != nil {
		return err
	}
	defer conn.Close()
	ids := make([]string, o.churn)
	var firstErr atomic.Value
	fail := func(err error) { firstErr.CompareAndSwap(nil, err) }
	batch := func(f func(i int)) {
		sem := make(chan struct{}, o.batch)
		var wg sync.WaitGroup
		for i := 0; i < o.churn; i++ {
			sem <- struct{}{}
			wg.Add(1)
			go func(i int) {
				defer func() { <-sem; wg.Done() }()
				f(i)
			}(i)
		}
		wg.Wait()
	}
	batch(func(i int) {
		name := fmt.Sprintf("churn-%d", i)
		podCfg, ctrCfg, err := grpcConfigs(o, name)
		if err != nil {
			fail(err)
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		run, err := cl.RunPodSandbox(cctx, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
		if err != nil {
			fail(fmt.Errorf("RunPodSandbox %s: %w", name, err))
			return
		}
		ids[i] = run.PodSandboxId
		c, err := cl.CreateContainer(cctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: ctrCfg, SandboxConfig: podCfg})
		if err != nil {
			fail(fmt.Errorf("CreateContainer %s: %w", name, err))
			return
		}
		if _, err := cl.StartContainer(cctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
			fail(fmt.Errorf("StartContainer %s: %w", name, err))
		}
	})
	batch(func(i int) {
		if ids[i] == "" {
			return
		}
		if err := removePodSandbox(cl, ids[i]); err != nil {
			fail(fmt.Errorf("churn-%d: %w", i, err))
		}
	})
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return nil
}
