package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// Size is a terminal size.
type Size struct {
	Width, Height uint16
}

// conmon's attach socket protocol (SOCK_SEQPACKET): each packet from conmon
// is one byte naming the stream followed by up to 8192 bytes of data; what
// a client writes goes to the container's stdin as is.
const (
	attachPipeStdout = 2
	attachPipeStderr = 3
	attachBufSize    = 8192 + 1 // conmon's STDIO_BUF_SIZE + the stream byte
)

// Attach connects to a running container's stdio through conmon's attach
// socket (<bundle>/attach): the container's output is copied to stdout and
// stderr (either may be nil; a terminal container has only stdout), stdin
// (may be nil) is copied to the container, and sizes from resize go to
// conmon's ctl fifo. When stdin ends, conmon closes the container's stdin
// if the container was created with StdinOnce. Attach returns when the
// container's output ends (it exited), or, without stdout/stderr, when
// stdin ends; or when ctx is done.
func (r *Runtime) Attach(ctx context.Context, id string, stdin io.Reader, stdout, stderr io.Writer, resize <-chan Size) error {
	if err := validID(id); err != nil {
		return err
	}
	m, err := r.readMeta(id)
	if err != nil {
		return err
	}
	conn, err := dialAttach(m.Bundle)
	if err != nil {
		return fmt.Errorf("container %s: attach: %w", id, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	if resize != nil {
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go r.forwardResize(rctx, id, m.Bundle, resize)
	}
	outDone := make(chan error, 1)
	if stdout != nil || stderr != nil {
		go func() { outDone <- copyAttachOutput(conn, stdout, stderr) }()
	}
	inDone := make(chan error, 1)
	if stdin != nil {
		go func() {
			_, err := io.Copy(conn, stdin)
			_ = conn.CloseWrite()
			inDone <- err
		}()
	}
	var result error
	select {
	case result = <-outDone:
	case err := <-inDone:
		if stdout != nil || stderr != nil {
			result = <-outDone
		} else {
			result = err
		}
	case <-ctx.Done():
		result = ctx.Err()
	}
	if ctx.Err() != nil {
		return fmt.Errorf("container %s: attach: %w", id, ctx.Err())
	}
	if result != nil && !errors.Is(result, net.ErrClosed) {
		return fmt.Errorf("container %s: attach: %w", id, result)
	}
	return nil
}

// dialAttach connects to <bundle>/attach through /proc/self/fd, so a long
// bundle path cannot overflow sun_path (108 bytes), as conmon itself does.
func dialAttach(bundle string) (*net.UnixConn, error) {
	dfd, err := unix.Open(bundle, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open bundle %s: %w", bundle, err)
	}
	defer unix.Close(dfd)
	addr := &net.UnixAddr{Net: "unixpacket", Name: fmt.Sprintf("/proc/self/fd/%d/attach", dfd)}
	conn, err := net.DialUnix("unixpacket", nil, addr)
	if err != nil {
		return nil, fmt.Errorf("connect to conmon's attach socket %s: %w", filepath.Join(bundle, "attach"), err)
	}
	return conn, nil
}

func copyAttachOutput(conn io.Reader, stdout, stderr io.Writer) error {
	buf := make([]byte, attachBufSize)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			var w io.Writer
			switch buf[0] {
			case attachPipeStdout:
				w = stdout
			case attachPipeStderr:
				w = stderr
			default:
				klog.V(2).InfoS("Unexpected attach stream", "stream", buf[0])
			}
			if w != nil {
				if _, werr := w.Write(buf[1:n]); werr != nil {
					return werr
				}
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// ctlMu serializes writers of a ctl fifo line (resize, reopen): lines are
// short, so each write is atomic, but keep the order.
var ctlMu sync.Mutex

// writeCtl writes one line to conmon's ctl fifo without ever blocking:
// "1 <height> <width>" resizes the terminal, "2 0 0" reopens the log.
func writeCtl(bundle, line string) error {
	ctlMu.Lock()
	defer ctlMu.Unlock()
	ctl := filepath.Join(bundle, "ctl")
	fd, err := unix.Open(ctl, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENOENT) {
			return errors.New("conmon is not running")
		}
		return fmt.Errorf("open %s: %w", ctl, err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(line)); err != nil {
		return fmt.Errorf("write %s: %w", ctl, err)
	}
	return nil
}

func (r *Runtime) forwardResize(ctx context.Context, id, bundle string, resize <-chan Size) {
	for {
		select {
		case <-ctx.Done():
			return
		case s, ok := <-resize:
			if !ok {
				return
			}
			if err := writeCtl(bundle, fmt.Sprintf("1 %d %d\n", s.Height, s.Width)); err != nil {
				klog.V(2).InfoS("Resize", "id", id, "err", err)
			}
		}
	}
}
