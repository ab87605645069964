package tunnel

import (
	"sync"
	"sync/atomic"
)

// maxQueuedEvents bounds the notifier queue: a subscriber that blocks for
// long makes the oldest events drop (counted) rather than memory grow.
const maxQueuedEvents = 4096

// notifier delivers link events to subscribers, in the order they were
// published, on its own goroutine: link owners publish without blocking and
// never call subscriber code themselves (a subscriber may call back into the
// manager or a link without deadlocking).
type notifier struct {
	wake chan struct{} // capacity 1: "the queue is not empty"
	done chan struct{} // closed when run returns

	mu     sync.Mutex // guards the following
	subs   []subscriber
	nextID uint64
	queue  []Event
	closed bool

	dropped atomic.Uint64
}

type subscriber struct {
	id uint64
	fn func(Event)
}

func newNotifier() *notifier {
	return &notifier{wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// subscribe adds fn; the returned function removes it. After it returns fn
// is not called again, except for a call already in progress.
func (n *notifier) subscribe(fn func(Event)) func() {
	n.mu.Lock()
	n.nextID++
	id := n.nextID
	n.subs = append(n.subs, subscriber{id: id, fn: fn})
	n.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			for i, s := range n.subs {
				if s.id == id {
					n.subs = append(n.subs[:i:i], n.subs[i+1:]...)
					return
				}
			}
		})
	}
}

// publish queues ev. It never blocks.
func (n *notifier) publish(ev Event) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	if len(n.queue) >= maxQueuedEvents {
		n.queue = n.queue[1:]
		n.dropped.Add(1)
	}
	n.queue = append(n.queue, ev)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// run delivers events until stop is closed and the queue is drained.
func (n *notifier) run(stop <-chan struct{}) {
	defer close(n.done)
	for {
		n.mu.Lock()
		batch := n.queue
		n.queue = nil
		subs := n.subs
		n.mu.Unlock()
		for _, ev := range batch {
			for _, s := range subs {
				s.fn(ev)
			}
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-n.wake:
		case <-stop:
			n.mu.Lock()
			n.closed = true
			rest := n.queue
			n.queue = nil
			subs = n.subs
			n.mu.Unlock()
			for _, ev := range rest {
				for _, s := range subs {
					s.fn(ev)
				}
			}
			return
		}
	}
}
