package faketwilio

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// Rates are the chances (0..1) that one send meets each fault.
type Rates struct {
	RateLimit      float64 // 429 / 20429: nothing created
	ServerError    float64 // 500: nothing created
	AcceptThenHang float64 // created, answer never comes (past the client's timeout)
	Permanent      float64 // PermanentCode: nothing created, never retryable
	Undelivered    float64 // created; callbacks end "undelivered"
	// PermanentCode is the Twilio code of Permanent faults (21612 when zero).
	PermanentCode int
}

// RandomFaults draws faults at Rates for Options.Chance. It can be switched
// off (a chaos run drains without faults) and counts what it drew.
type RandomFaults struct {
	rates Rates
	on    atomic.Bool

	mu     sync.Mutex
	rng    *rand.Rand
	counts map[FaultKind]int
}

// NewRandomFaults returns a switched-on RandomFaults drawing from seed.
func NewRandomFaults(r Rates, seed uint64) *RandomFaults {
	if r.PermanentCode == 0 {
		r.PermanentCode = 21612
	}
	rf := &RandomFaults{rates: r, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), counts: map[FaultKind]int{}}
	rf.on.Store(true)
	return rf
}

// SetOn switches drawing on or off.
func (rf *RandomFaults) SetOn(on bool) { rf.on.Store(on) }

// Pick is an Options.Chance: it returns a fault for one send, or nil.
func (rf *RandomFaults) Pick(to string) *Fault {
	if !rf.on.Load() {
		return nil
	}
	rf.mu.Lock()
	defer rf.mu.Unlock()
	x := rf.rng.Float64()
	r := rf.rates
	var ft *Fault
	switch {
	case x < r.RateLimit:
		ft = &Fault{Kind: FaultRateLimit}
	case x < r.RateLimit+r.ServerError:
		ft = &Fault{Kind: FaultServerError}
	case x < r.RateLimit+r.ServerError+r.AcceptThenHang:
		ft = &Fault{Kind: FaultAcceptThenHang}
	case x < r.RateLimit+r.ServerError+r.AcceptThenHang+r.Permanent:
		ft = &Fault{Kind: FaultError, Code: r.PermanentCode}
	case x < r.RateLimit+r.ServerError+r.AcceptThenHang+r.Permanent+r.Undelivered:
		ft = &Fault{Kind: FaultUndelivered}
	default:
		return nil
	}
	ft.To, ft.Times = to, 1
	rf.counts[ft.Kind]++
	return ft
}

// Counts returns how many faults of each kind were drawn.
func (rf *RandomFaults) Counts() map[FaultKind]int {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	out := make(map[FaultKind]int, len(rf.counts))
	for k, v := range rf.counts {
		out[k] = v
	}
	return out
}

// String names a fault kind for reports.
func (k FaultKind) String() string {
	switch k {
	case FaultError:
		return "error"
	case FaultRateLimit:
		return "429"
	case FaultServerError:
		return "500"
	case FaultBadGateway:
		return "502"
	case FaultHang:
		return "hang"
	case FaultAcceptThenHang:
		return "accepted-then-timeout"
	case FaultAcceptThenDrop:
		return "accepted-then-drop"
	case FaultUndelivered:
		return "undelivered"
	case FaultNoFinalStatus:
		return "no-final-status"
	}
	return "unknown"
}
