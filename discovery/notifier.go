package discovery

import (
	"context"
	"sync"
)

// notifier delivers items to subscribers in order on its own goroutine, so
// the producer (a run loop) never calls out and never blocks on a slow
// subscriber. push itself never refuses an item; the producer bounds the
// queue by watching backlog and waiting on drained (the client stops
// reading its coordinator session while too many changes wait).
type notifier[T any] struct {
	mu    sync.Mutex
	queue []T             // guarded by mu
	subs  map[int]func(T) // guarded by mu
	next  int             // guarded by mu
	wake  chan struct{}   // cap 1
	// drained (cap 1) is poked whenever the queue has been emptied.
	drained chan struct{}
}

func newNotifier[T any]() *notifier[T] {
	return &notifier[T]{subs: map[int]func(T){}, wake: make(chan struct{}, 1), drained: make(chan struct{}, 1)}
}

// backlog is how many items wait for delivery.
func (n *notifier[T]) backlog() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.queue)
}

// subscribe adds fn and returns a function that removes it. fn is called on
// the notifier goroutine, one item at a time, in order.
func (n *notifier[T]) subscribe(fn func(T)) func() {
	n.mu.Lock()
	defer n.mu.Unlock()
	id := n.next
	n.next++
	n.subs[id] = fn
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		delete(n.subs, id)
	}
}

// push queues an item; it never blocks.
func (n *notifier[T]) push(items ...T) {
	if len(items) == 0 {
		return
	}
	n.mu.Lock()
	if len(n.subs) > 0 {
		n.queue = append(n.queue, items...)
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// run delivers until ctx is done.
func (n *notifier[T]) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.wake:
		}
		for {
			n.mu.Lock()
			if len(n.queue) == 0 {
				n.mu.Unlock()
				select {
				case n.drained <- struct{}{}:
				default:
				}
				break
			}
			item := n.queue[0]
			var zero T
			n.queue[0] = zero
			n.queue = n.queue[1:]
			subs := make([]func(T), 0, len(n.subs))
			for _, fn := range n.subs {
				subs = append(subs, fn)
			}
			n.mu.Unlock()
			for _, fn := range subs {
				fn(item)
			}
			if ctx.Err() != nil {
				return
			}
		}
	}
}
