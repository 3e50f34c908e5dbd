package jobs_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conversa/conversa/agents"
	"github.com/conversa/conversa/internal/fakellm"
	"github.com/conversa/conversa/internal/faketwilio"
	"github.com/conversa/conversa/internal/media"
)

// BenchmarkVoiceNoteMemory measures what one in-flight voice note costs in
// memory on its way from Twilio to the transcription server (fetch, basic
// auth, redirect, streamed multipart upload), for a small note and one at
// MEDIA_MAX_BYTES, eight at a time. B/op is every allocation of both ends
// (the fakes run in this process too); peak-heap-KiB/note is the most heap
// in use while eight notes stream, over the heap before, divided by eight.
// Streaming shows as both staying flat as the note grows 80 times.
//
//	go test -run '^$' -bench VoiceNoteMemory -benchmem ./jobs/
func BenchmarkVoiceNoteMemory(b *testing.B) {
	for _, size := range []int64{64 << 10, 5 << 20} {
		b.Run(fmt.Sprintf("note=%dKiB", size>>10), func(b *testing.B) {
			tw := faketwilio.New(faketwilio.Options{})
			twURL, err := tw.Start()
			if err != nil {
				b.Fatal(err)
			}
			defer tw.Close()
			tw.AddAccount("ACbench", "tokbench")
			url := tw.AddMedia("ACbench", faketwilio.MediaItem{ContentType: "audio/ogg; codecs=opus", Size: size})
			stt := httptest.NewServer(fakellm.NewTranscriber(0))
			defer stt.Close()
			f, err := media.NewFetcher(media.Config{TwilioAPIURL: twURL, AllowPrivate: true, MaxBytes: 5 << 20})
			if err != nil {
				b.Fatal(err)
			}
			tr, err := agents.NewOpenAITranscriber(agents.TranscriberConfig{BaseURL: stt.URL + "/v1", APIKey: "sk", Model: "whisper-1"})
			if err != nil {
				b.Fatal(err)
			}
			const parallel = 8
			note := func() {
				d, err := f.Open(context.Background(), url, "ACbench", "tokbench", "audio/ogg")
				if err != nil {
					b.Fatal(err)
				}
				defer d.Close()
				if _, err := tr.Transcribe(context.Background(), d, d.ContentType); err != nil {
					b.Fatal(err)
				}
			}
			note() // warm the connections

			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			var peak atomic.Uint64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				var ms runtime.MemStats
				for {
					select {
					case <-stop:
						return
					case <-time.After(2 * time.Millisecond):
					}
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > peak.Load() {
						peak.Store(ms.HeapInuse)
					}
				}
			}()
			b.ReportAllocs()
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				var wg sync.WaitGroup
				for range parallel {
					wg.Go(note)
				}
				wg.Wait()
			}
			b.StopTimer()
			close(stop)
			<-sampled
			over := int64(peak.Load()) - int64(before.HeapInuse)
			b.ReportMetric(float64(max(over, 0))/parallel/1024, "peak-heap-KiB/note")
		})
	}
}
