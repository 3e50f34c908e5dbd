// Command demotool is the README's example appointment endpoint, the
// business's side of an HTTP tool: it checks X-Conversa-Signature with the
// tenant's signing secret, books the next free slot once per
// Idempotency-Key (a repeat gets the first answer), and answers
// {"reply": ..., "slot": ...}.
//
//	SIGNING_SECRET=<the tenant's signing_secret> go run ./internal/demotool -addr 127.0.0.1:9090
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"sync"

	"github.com/conversa/conversa/internal/signing"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9090", "listen address")
	flag.Parse()
	secret := os.Getenv("SIGNING_SECRET")
	slots := []string{"Tuesday 10:00", "Tuesday 11:30", "Wednesday 09:00", "Thursday 16:00"}
	var mu sync.Mutex
	booked := map[string][]byte{} // Idempotency-Key -> first answer

	http.HandleFunc("POST /book", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		if secret != "" && !signing.Verify(r.Header.Get("X-Conversa-Signature"), secret, body) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		key := r.Header.Get("Idempotency-Key")
		mu.Lock()
		defer mu.Unlock()
		answer, seen := booked[key]
		if !seen {
			if len(slots) == 0 {
				answer = []byte(`{"reply": "Sorry, we are fully booked this week."}`)
			} else {
				slot := slots[0]
				slots = slots[1:]
				answer, _ = json.Marshal(map[string]string{"reply": fmt.Sprintf("Booked: %s with Dr. Silva. See you then!", slot), "slot": slot})
			}
			booked[key] = answer
		}
		log.Printf("book key=%s repeat=%v", key, seen)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	})
	log.Printf("appointment tool on http://%s/book (signature checked: %v)", *addr, secret != "")
	log.Fatal(http.ListenAndServe(*addr, nil))
}
