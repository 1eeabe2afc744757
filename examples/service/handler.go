package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/mail"
	"time"

	"github.com/google/uuid"

	"github.com/omnibox-go/omnibox"
)

// UserCreated is the event written when a user is created, as JSON.
type UserCreated struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	CreatedAt time.Time `json:"created_at"`
}

// errEmailTaken is returned when a user with the email exists.
var errEmailTaken = errors.New("a user with this email exists")

// handler serves the service's HTTP API.
type handler struct {
	db      *sql.DB
	outbox  *omnibox.Outbox
	topic   string
	timeout time.Duration
	log     *slog.Logger
}

// newHandler returns the service's routes: POST /users and GET /healthz.
func newHandler(db *sql.DB, outbox *omnibox.Outbox, cfg Config) http.Handler {
	h := &handler{db: db, outbox: outbox, topic: cfg.Topic, timeout: cfg.RequestTimeout, log: cfg.Logger}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /users", h.createUser)
	mux.HandleFunc("GET /healthz", h.health)
	return mux
}

// createUser inserts a user and its UserCreated event in one transaction:
// both are committed, or neither.
func (h *handler) createUser(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Email string `json:"email"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		http.Error(w, "want a JSON body {\"email\": \"...\"}: "+err.Error(), http.StatusBadRequest)
		return
	}
	if _, err := mail.ParseAddress(req.Email); err != nil {
		http.Error(w, "invalid email: "+err.Error(), http.StatusBadRequest)
		return
	}

	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	user := UserCreated{ID: uuid.NewString(), Email: req.Email, CreatedAt: time.Now().UTC()}
	err := h.outbox.InTx(ctx, h.db, nil, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3)
			ON CONFLICT (email) DO NOTHING`, user.ID, user.Email, user.CreatedAt)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return errEmailTaken // rolls back: no user, no event
		}
		payload, err := json.Marshal(user)
		if err != nil {
			return err
		}
		return h.outbox.WriteTx(ctx, tx, omnibox.Event{
			Topic: h.topic, Key: user.ID, Payload: payload,
			Metadata: map[string]string{"event_type": "UserCreated"},
		})
	})
	switch {
	case errors.Is(err, errEmailTaken):
		http.Error(w, err.Error(), http.StatusConflict)
		return
	case err != nil:
		h.log.ErrorContext(ctx, "creating a user", "email", req.Email, "err", err)
		http.Error(w, "could not create the user", http.StatusInternalServerError)
		return
	}
	h.log.InfoContext(ctx, "user created", "id", user.ID, "email", user.Email)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(user) // the client may be gone; nothing to do then
}

// health answers 200 when the database answers within 2 s, else 503.
func (h *handler) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := h.db.PingContext(ctx); err != nil {
		http.Error(w, "database: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}
