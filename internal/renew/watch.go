package renew

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"os"
	"syscall"

	"github.com/podlease/podlease/internal/state"
)

// watchState wakes the loop whenever state.json is replaced, renamed away
// or removed,
// so that vault-revoke's revoked_at stops all work at once instead of at
// the next scheduled action. It uses inotify, not polling. Without inotify
// the returned channel is nil, and revoked_at is seen at the next wake-up
// (and always before any write).
func watchState(dir string, log *slog.Logger) (wake <-chan struct{}, stop func()) {
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		log.Debug("cannot watch the state dir; vault-revoke is noticed at the next scheduled action", "err", err)
		return nil, func() {}
	}
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_MOVED_TO|syscall.IN_MOVED_FROM|syscall.IN_CLOSE_WRITE|syscall.IN_DELETE); err != nil {
		syscall.Close(fd)
		log.Debug("cannot watch the state dir; vault-revoke is noticed at the next scheduled action", "err", err)
		return nil, func() {}
	}
	// A non-blocking descriptor joins Go's poller, so Close ends the Read.
	f := os.NewFile(uintptr(fd), "inotify")
	ch := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			if namesStateFile(buf[:n]) {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		}
	}()
	return ch, func() {
		f.Close()
		<-done
	}
}

// namesStateFile reports whether a batch of inotify events names
// state.json.
func namesStateFile(b []byte) bool {
	for len(b) >= syscall.SizeofInotifyEvent {
		n := int(binary.NativeEndian.Uint32(b[12:16])) // struct inotify_event's len
		end := syscall.SizeofInotifyEvent + n
		if end > len(b) {
			return false
		}
		if string(bytes.TrimRight(b[syscall.SizeofInotifyEvent:end], "\x00")) == state.FileName {
			return true
		}
		b = b[end:]
	}
	return false
}
