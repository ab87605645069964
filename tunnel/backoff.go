package tunnel

import (
	"math/rand/v2"
	"time"
)

// backoffJitter is the ± fraction applied to every backoff delay so that
// links failing together do not retry in lockstep.
const backoffJitter = 0.2

// backoff returns the delay before attempt number n+1 after n consecutive
// failures (n >= 1): min·2^(n-1), capped at max, with ±20% jitter.
func backoff(n int, min, max time.Duration) time.Duration {
	d := min
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	j := 1 + backoffJitter*(2*rand.Float64()-1)
	return time.Duration(float64(d) * j)
}
