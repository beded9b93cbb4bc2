package wspool

// The writing side of a connection's job: pending bytes, control frames,
// frames pulled from the source and our close frame, one writev per round.

import "time"

// slowClose makes one last attempt to write what is pending plus a 1013
// close frame, and otherwise closes at TCP level.
func (c *Conn) slowClose(w *worker, now int64) bool {
	c.s.cfg.Hooks.SlowClosed(closeWriteTimeout.cause)
	c.closeReq.CompareAndSwap(nil, closeWriteTimeout)
	if !c.flush(w, true, now) {
		return false
	}
	if c.closing {
		return true
	}
	c.teardown(closeAbnormal, true)
	return false
}

// flush writes pending bytes, control frames, then frames pulled from the
// source, with one writev per round; it never blocks. It reports false once
// torn down. now may be 0 (not read yet).
func (c *Conn) flush(w *worker, writable bool, now int64) bool {
	if c.io != nil && len(c.io.pending) > 0 && !writable {
		// Blocked on a full socket: only an EPOLLOUT edge (or a close)
		// makes trying again worthwhile, and pulling more would grow
		// pending without bound.
		return true
	}
	cfg := &c.s.cfg
	for round := 0; round < 4; round++ {
		bufs, hadPending := w.bufs[:0], false
		if x := c.io; x != nil {
			bufs = append(bufs, x.pending...)
			hadPending = len(x.pending) > 0
			x.pending = nil
		}
		cr := c.closeReq.Load()
		draining := c.draining || cr != nil && cr.drain
		pollDue := c.pingDue && c.kind == kindPoll // a poll's one "ping" is its timeout
		if c.pingDue && cr == nil {
			bufs = c.appendPing(bufs)
		}
		c.pingDue = false
		if x := c.io; x != nil && x.ctrl != nil {
			bufs = append(bufs, x.ctrl)
			x.ctrl = nil
		}
		c.releaseIO()
		pulled, exhausted := false, false
		n0 := len(bufs)
		if !hadPending && !c.closeQueued && (cr == nil || draining) && c.src != nil {
			bufs = c.src.Pull(bufs, cfg.MaxWriteBatch)
			pulled = len(bufs) > n0
			size := 0
			for _, b := range bufs[n0:] {
				size += len(b)
			}
			exhausted = size < cfg.MaxWriteBatch
			if pulled && c.kind == kindSSE {
				bufs = w.toSSE(bufs, n0)
			}
		}
		if c.kind == kindPoll && !c.closeQueued {
			var answered bool
			if bufs, answered = c.gatherPoll(bufs, n0, cr != nil || pollDue); !answered {
				if pulled && !exhausted {
					continue
				}
				w.bufs = bufs
				return true
			}
			// The answer is the whole response: the connection ends after it.
			c.closeQueued = true
			c.sentCode = CloseNormal
			if cr != nil {
				c.sentCode = cr.code
			}
			pulled = false
		}
		// The close frame goes right after what is being written, except in
		// a drain: there it waits until a pull finds the source empty, so
		// nothing the source still holds is dropped behind it.
		drainLeft := draining && hadPending && c.src != nil
		if cr != nil && !c.closeQueued && !pulled && !drainLeft {
			bufs = append(bufs, c.closeBytes(cr))
			c.closeQueued = true
			c.sentCode = cr.code
		}
		if len(bufs) == 0 {
			w.bufs = bufs
			return true
		}
		done, written, rest, err := w.writev(int(c.fd), bufs)
		if written > 0 {
			cfg.Hooks.FramesWritten(c.framesIn(bufs[:done]), written)
		}
		if err != nil {
			clear(bufs)
			w.bufs = bufs[:0]
			cfg.Hooks.WriteError()
			c.teardown(closeAbnormal, false)
			return false
		}
		if len(rest) > 0 {
			// Allocates only when the socket is full; the frames themselves
			// are shared and only resliced.
			c.ioState().pending = append([][]byte(nil), rest...)
			clear(bufs)
			w.bufs = bufs[:0]
			if now == 0 {
				now = time.Now().UnixNano()
			}
			if written > 0 || c.stallSince.Load() == 0 {
				c.stallSince.Store(now)
				c.s.timers.set(c, now+int64(cfg.WriteTimeout))
			}
			return true
		}
		clear(bufs)
		w.bufs = bufs[:0]
		if c.stallSince.Load() != 0 {
			c.stallSince.Store(0)
		}
		if c.closeQueued {
			if now == 0 {
				now = time.Now().UnixNano()
			}
			c.enterClosing(now)
			return true
		}
		if !pulled && !hadPending {
			return true
		}
		if pulled && exhausted && cr == nil {
			// A Pull that stopped short of maxBytes had nothing more;
			// whatever is added later comes with a Wake. Asking again would
			// cost every delivery a second Pull.
			return true
		}
	}
	// Budget spent and the source may hold more: another pass, later.
	c.state.Or(stWake)
	return true
}
