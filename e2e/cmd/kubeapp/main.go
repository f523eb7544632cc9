// Command kubeapp is the app of the test bed's Kubernetes pods: it reads the
// credentials vault-init wrote from SECRETS_FILE (default /vault/secrets/db)
// for every new connection, queries PostgreSQL every INTERVAL, and logs one
// line per query. SECRETS_FORMAT says what the file holds: env (default,
// vault-init's env format) or url (a PostgreSQL connection URL, as an
// injector-style template renders it; its user and password are used, the
// address and database come from PGHOST, PGPORT and PGDATABASE, since the
// URL names the cluster's service). On SIGTERM it keeps querying for DRAIN (its graceful shutdown),
// then exits; with IGNORE_TERM it never stops by itself. With QUERIES set
// it exits 0 after that many successful queries (a Job's work).
//
// Log lines (the container log adds the runtime's timestamp):
//
//	query ok user=v-... n=12
//	query failed n=13 err=...
//	sigterm
//	exit ok=40 failed=0
//
// No line holds the password.
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

func main() {
	interval := envDuration("INTERVAL", 200*time.Millisecond)
	drain := envDuration("DRAIN", 5*time.Second)
	ignoreTerm := os.Getenv("IGNORE_TERM") == "true"
	queries, _ := strconv.Atoi(os.Getenv("QUERIES"))
	file := os.Getenv("SECRETS_FILE")
	if file == "" {
		file = "/vault/secrets/db"
	}
	read := readEnvFile
	switch f := os.Getenv("SECRETS_FORMAT"); f {
	case "", "env":
	case "url":
		read = readURLFile
	default:
		fmt.Fprintf(os.Stderr, "SECRETS_FORMAT %q: want env or url\n", f)
		os.Exit(2)
	}

	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	var stopAt time.Time
	ok, failed := 0, 0
	fmt.Printf("start uid=%d gid=%d groups=%v\n", os.Getuid(), os.Getgid(), groups())
	for {
		select {
		case <-term:
			fmt.Println("sigterm")
			if !ignoreTerm && stopAt.IsZero() {
				stopAt = time.Now().Add(drain)
			}
		default:
		}
		if !stopAt.IsZero() && time.Now().After(stopAt) {
			fmt.Printf("exit ok=%d failed=%d\n", ok, failed)
			return
		}
		user, err := query(read, file)
		if err != nil {
			failed++
			fmt.Printf("query failed n=%d err=%s\n", ok+failed, oneLine(err))
		} else {
			ok++
			fmt.Printf("query ok user=%s n=%d\n", user, ok+failed)
			if queries > 0 && ok >= queries {
				fmt.Printf("exit ok=%d failed=%d\n", ok, failed)
				return
			}
		}
		time.Sleep(interval)
	}
}

// query connects with the credentials read from file and asks who it is.
func query(read func(string) (map[string]string, error), file string) (string, error) {
	creds, err := read(file)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s dbname=%s sslmode=disable connect_timeout=3",
		os.Getenv("PGHOST"), os.Getenv("PGPORT"), os.Getenv("PGDATABASE")))
	if err != nil {
		return "", err
	}
	cfg.User, cfg.Password = creds["USERNAME"], creds["PASSWORD"]
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", fmt.Errorf("connect as %s: %w", creds["USERNAME"], err)
	}
	defer conn.Close(ctx)
	var user string
	var n int
	if err := conn.QueryRow(ctx, "SELECT current_user, count(*) FROM items").Scan(&user, &n); err != nil {
		return "", err
	}
	return user, nil
}

// readEnvFile parses KEY="value" lines as vault-init's env format writes
// them (values double-quoted, Go escapes).
func readEnvFile(file string) (map[string]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, found := strings.Cut(sc.Text(), "=")
		if !found {
			continue
		}
		m[k] = unquote(v)
	}
	return m, sc.Err()
}

// readURLFile takes the user name and password from a PostgreSQL URL, the
// file's only line (trailing newlines dropped, as $(cat FILE) would).
func readURLFile(file string) (map[string]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(strings.TrimRight(string(b), "\n"))
	if err != nil {
		// pgx's error may quote the URL, password included.
		return nil, fmt.Errorf("%s: not a PostgreSQL connection URL", file)
	}
	if cfg.User == "" || cfg.Password == "" {
		return nil, fmt.Errorf("%s: the URL has no user name or password", file)
	}
	return map[string]string{"USERNAME": cfg.User, "PASSWORD": cfg.Password}, nil
}

// unquote undoes vault-init's double quoting: \n, \r, \xHH, and a
// backslash before any other character.
func unquote(v string) string {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return v
	}
	v = v[1 : len(v)-1]
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '\\' || i+1 == len(v) {
			b.WriteByte(v[i])
			continue
		}
		i++
		switch v[i] {
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 'x':
			if i+2 < len(v) {
				if n, err := strconv.ParseUint(v[i+1:i+3], 16, 8); err == nil {
					b.WriteByte(byte(n))
					i += 2
					continue
				}
			}
			b.WriteByte('x')
		default:
			b.WriteByte(v[i])
		}
	}
	return b.String()
}

func groups() []int {
	g, _ := os.Getgroups()
	return g
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

func envDuration(k string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(k)); err == nil {
		return d
	}
	return def
}
