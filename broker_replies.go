// A connection's replies, in the order of the frames they answer, and the
// bound that stops reading a connection while too many of its sends wait.
//
// Policy:
//   - Every frame a connection's reader answers takes a place in that
//     connection's reply queue before it is handled; the answer fills the
//     place whenever it is known — at once for most frames and for a
//     refused send, after the commit for a stored one — and the socket's
//     writer sends replies from the front of the queue as they fill. So a
//     connection hears its answers in the order it asked, however the
//     store batches its sends, while its reader goes on reading.
//   - Places are bounded: at most maxRepliesWaiting per connection. Its
//     reader waits for one before it handles the next frame, and so stops
//     reading that socket: a client that sends faster than the store
//     commits is slowed down at its own socket (TCP backpressure), the
//     broker's queues stay bounded, and other connections keep their share.
//   - A place is given back once its reply has been handed to the socket.
//   - A close takes a place too (without waiting for one), so a refusal's
//     error frame always goes out before the close that follows it.
//   - Pushes are not replies: they go through the socket's out queue and
//     never wait for a reply.
package main

import (
	"sync"

	"github.com/coder/websocket"
)

// maxRepliesWaiting bounds one connection's replies not yet sent, most of
// them sends waiting for their commit.
const maxRepliesWaiting = 64

// replyQueue is one connection's queue of replies.
type replyQueue struct {
	places chan struct{} // one token per bounded place taken
	ready  chan struct{} // the front of the queue may have a reply
	mu     sync.Mutex
	queue  []*replyPlace // oldest first
}

// replyPlace is one reply's place in the queue: a frame, or the
// instruction to close.
type replyPlace struct {
	data    []byte
	filled  bool
	bounded bool // holds a token of places
	close   bool
	code    websocket.StatusCode
	reason  string
}

func newReplyQueue() *replyQueue {
	return &replyQueue{places: make(chan struct{}, maxRepliesWaiting), ready: make(chan struct{}, 1)}
}

// reserve takes a place, waiting while maxRepliesWaiting are taken; nil
// when done closes first.
func (q *replyQueue) reserve(done <-chan struct{}) *replyPlace {
	select {
	case q.places <- struct{}{}:
	default:
		select {
		case q.places <- struct{}{}:
		case <-done:
			return nil
		}
	}
	p := &replyPlace{bounded: true}
	q.mu.Lock()
	q.queue = append(q.queue, p)
	q.mu.Unlock()
	return p
}

// fill gives a place its reply (nil: nothing to send after all) and wakes
// the writer when the front of the queue can go.
func (q *replyQueue) fill(p *replyPlace, data []byte) {
	q.mu.Lock()
	p.data, p.filled = data, true
	front := q.queue[0] == p
	q.mu.Unlock()
	if front {
		q.wake()
	}
}

// closeAfter queues a close behind every reply already placed. It never
// waits.
func (q *replyQueue) closeAfter(code websocket.StatusCode, reason string) {
	q.mu.Lock()
	q.queue = append(q.queue, &replyPlace{filled: true, close: true, code: code, reason: reason})
	front := len(q.queue) == 1
	q.mu.Unlock()
	if front {
		q.wake()
	}
}

func (q *replyQueue) wake() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take removes the replies ready at the front of the queue, in order, and
// gives their places back.
func (q *replyQueue) take() []*replyPlace {
	q.mu.Lock()
	n := 0
	for n < len(q.queue) && q.queue[n].filled {
		n++
	}
	out := append([]*replyPlace(nil), q.queue[:n]...)
	clear(q.queue[:n])
	q.queue = q.queue[n:]
	q.mu.Unlock()
	for _, p := range out {
		if p.bounded {
			<-q.places
		}
	}
	return out
}

// pushQueue holds a socket's pushes for its writer. It grows with what
// waits, up to outQueueSize, instead of keeping a full-size buffer for
// every idle connection.
type pushQueue struct {
	ready chan struct{}
	mu    sync.Mutex
	items [][]byte
}

func newPushQueue() *pushQueue { return &pushQueue{ready: make(chan struct{}, 1)} }

// offer adds a push unless outQueueSize wait already.
func (q *pushQueue) offer(data []byte) bool {
	q.mu.Lock()
	if len(q.items) >= outQueueSize {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, data)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// take removes every waiting push, oldest first.
func (q *pushQueue) take() [][]byte {
	q.mu.Lock()
	out := q.items
	q.items = nil
	q.mu.Unlock()
	return out
}
