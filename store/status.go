package store

// The message state machine (docs/delivery.md, "Message states"). Every
// status a message can have, and every move between two of them, is in
// this file; the database's CHECK constraint (migration 0005) holds the
// same list.

// MessageStatus is a message's status: ours (received, pending, claimed)
// or one Twilio reports.
type MessageStatus string

const (
	// StatusReceived is every inbound message's status.
	StatusReceived MessageStatus = "received"
	// StatusPending: an outbound message written, not being sent.
	StatusPending MessageStatus = "pending"
	// StatusClaimed: conversa.send committed its claim before calling
	// Twilio; the attempt's outcome is not known yet. Never with a SID.
	StatusClaimed MessageStatus = "claimed"
	// Twilio's statuses, lowest first.
	StatusQueued      MessageStatus = "queued"
	StatusAccepted    MessageStatus = "accepted"
	StatusScheduled   MessageStatus = "scheduled"
	StatusSending     MessageStatus = "sending"
	StatusSent        MessageStatus = "sent"
	StatusDelivered   MessageStatus = "delivered"
	StatusRead        MessageStatus = "read"
	StatusFailed      MessageStatus = "failed"
	StatusUndelivered MessageStatus = "undelivered"
	// StatusCanceled is Twilio's status for a scheduled message that was
	// cancelled; it is stored as failed with the reason twilio_canceled.
	StatusCanceled MessageStatus = "canceled"
)

// transitions is the state machine: the statuses a message may move to
// from each status it can be stored with. A status never moves backwards
// (the one exception: a claim Twilio certainly did not act on returns to
// pending), failed and undelivered are terminal, and a failure never
// overwrites delivered or read: the customer got it.
var transitions = map[MessageStatus][]MessageStatus{
	StatusReceived:    nil,
	StatusPending:     {StatusClaimed, StatusFailed},
	StatusClaimed:     {StatusPending, StatusQueued, StatusAccepted, StatusScheduled, StatusSending, StatusSent, StatusDelivered, StatusRead, StatusFailed, StatusUndelivered},
	StatusQueued:      {StatusSending, StatusSent, StatusDelivered, StatusRead, StatusFailed, StatusUndelivered},
	StatusAccepted:    {StatusSending, StatusSent, StatusDelivered, StatusRead, StatusFailed, StatusUndelivered},
	StatusScheduled:   {StatusSending, StatusSent, StatusDelivered, StatusRead, StatusFailed, StatusUndelivered},
	StatusSending:     {StatusSent, StatusDelivered, StatusRead, StatusFailed, StatusUndelivered},
	StatusSent:        {StatusDelivered, StatusRead, StatusFailed, StatusUndelivered},
	StatusDelivered:   {StatusRead},
	StatusRead:        nil,
	StatusFailed:      nil,
	StatusUndelivered: nil,
}

// Stored reports whether s is a status a message may be stored with.
func (s MessageStatus) Stored() bool {
	_, ok := transitions[s]
	return ok
}

// CanMove reports whether a message at status s may move to next.
func (s MessageStatus) CanMove(next MessageStatus) bool {
	for _, n := range transitions[s] {
		if n == next {
			return true
		}
	}
	return false
}

// Unsent reports whether Twilio has not (knowingly) got the message yet:
// pending, or claimed by an attempt whose outcome is unknown.
func (s MessageStatus) Unsent() bool { return s == StatusPending || s == StatusClaimed }

// Final reports whether nothing more will happen to the message's delivery.
func (s MessageStatus) Final() bool {
	return s == StatusDelivered || s == StatusRead || s.Failure()
}

// Failure reports whether s ends a message as not delivered.
func (s MessageStatus) Failure() bool {
	return s == StatusFailed || s == StatusUndelivered || s == StatusCanceled
}

// Stores is the status a report of s is stored as (canceled is failed).
func (s MessageStatus) Stores() MessageStatus {
	if s == StatusCanceled {
		return StatusFailed
	}
	return s
}

// TwilioReports reports whether s is a status Twilio reports that Conversa
// tracks (receiving, partially_delivered and the like are not).
func (s MessageStatus) TwilioReports() bool {
	switch s {
	case StatusQueued, StatusAccepted, StatusScheduled, StatusSending, StatusSent,
		StatusDelivered, StatusRead, StatusFailed, StatusUndelivered, StatusCanceled:
		return true
	}
	return false
}

// Moves reports whether a Twilio report of next moves a message at cur.
func Moves(cur, next MessageStatus) bool {
	return next.TwilioReports() && cur.CanMove(next.Stores())
}

// MovesFrom is every stored status a Twilio report of next moves a message
// from (Moves turned around), for a statement that applies a report in SQL.
func MovesFrom(next MessageStatus) []MessageStatus {
	var from []MessageStatus
	for _, s := range AllStatuses() {
		if Moves(s, next) {
			from = append(from, s)
		}
	}
	return from
}

// AllStatuses is every status a message may be stored with, in the
// table's order of definition, for the constraint and the tests.
func AllStatuses() []MessageStatus {
	return []MessageStatus{StatusReceived, StatusPending, StatusClaimed, StatusQueued, StatusAccepted, StatusScheduled,
		StatusSending, StatusSent, StatusDelivered, StatusRead, StatusFailed, StatusUndelivered}
}

// ConversationStatus says who answers a conversation.
type ConversationStatus string

const (
	ConversationBot    ConversationStatus = "bot"
	ConversationHuman  ConversationStatus = "human"
	ConversationClosed ConversationStatus = "closed"
)

// Valid reports whether s is a conversation status.
func (s ConversationStatus) Valid() bool {
	return s == ConversationBot || s == ConversationHuman || s == ConversationClosed
}

// Author is who wrote a message.
type Author string

const (
	AuthorContact Author = "contact" // the customer (inbound)
	AuthorBot     Author = "bot"     // an AI reply
	AuthorHuman   Author = "human"   // a person of the business
)

// Direction is which way a message went.
type Direction string

const (
	DirectionInbound  Direction = "inbound"
	DirectionOutbound Direction = "outbound"
)

// ChannelKind is a sender number's channel.
type ChannelKind string

const (
	ChannelSMS      ChannelKind = "sms"
	ChannelWhatsApp ChannelKind = "whatsapp"
)
