package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Names of the PostgreSQL objects the bed creates.
const (
	// PGDatabase is the application database, owned by PGAdminUser.
	PGDatabase = "app"
	// PGAdminUser is the role Vault's database secrets engine connects as:
	// LOGIN CREATEROLE, not a superuser, owner of PGDatabase and its tables.
	PGAdminUser = "vaultadmin"
	// PGStaticUser is an existing login role managed by the Vault static
	// role StaticRole.
	PGStaticUser = "static_app"

	pgSuperuser = "postgres"
)

// pgServer is a throwaway PostgreSQL cluster.
type pgServer struct {
	dir       string // cluster dir, owned by the postgres OS user when run as root
	port      int
	superPass string // password of the bootstrap superuser
	adminPass string // password of PGAdminUser
	proc      *proc
}

// pgBinDir finds the directory holding initdb and postgres: env
// PODLEASE_PG_BINDIR, else the newest /usr/lib/postgresql/*/bin (Debian),
// else the directory of postgres on PATH.
func pgBinDir() (string, error) {
	if d := os.Getenv("PODLEASE_PG_BINDIR"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi < vj
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i], nil
		}
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("postgresql server binaries not found: install the postgresql package or set PODLEASE_PG_BINDIR")
}

// pgCredential returns the credential to run PostgreSQL with: initdb and
// postgres refuse to run as root, so as root they run as the postgres OS
// user; otherwise as the current user.
func pgCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, so postgresql must run as the postgres OS user: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("uid of postgres: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("gid of postgres: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// startPostgres creates a cluster under bedDir, starts it on a free port of
// 127.0.0.1 and creates the roles, database and table the bed promises.
func startPostgres(ctx context.Context, bedDir string) (*pgServer, error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := pgCredential()
	if err != nil {
		return nil, err
	}
	pg := &pgServer{
		dir:       filepath.Join(bedDir, "pg"),
		superPass: randomHex(16),
		adminPass: randomHex(16),
	}
	sockDir := filepath.Join(pg.dir, "sock")
	dataDir := filepath.Join(pg.dir, "data")
	for _, d := range []string{pg.dir, sockDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, err
		}
		if cred != nil {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, err
			}
		}
	}

	// The superuser password reaches initdb through a file, never argv.
	pwFile := filepath.Join(pg.dir, "pwfile")
	if err := os.WriteFile(pwFile, []byte(pg.superPass+"\n"), 0o600); err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(pwFile, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"),
		"-D", dataDir, "-U", pgSuperuser, "--pwfile", pwFile,
		"--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
		"-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions")
	initdb.Dir = pg.dir
	initdb.Env = minimalEnv(pg.dir)
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	out, err := initdb.CombinedOutput()
	_ = os.Remove(pwFile)
	if err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}

	logPath := filepath.Join(bedDir, "postgres.log")
	for attempt := 1; ; attempt++ {
		err = pg.run(ctx, bin, dataDir, sockDir, logPath, cred)
		if err == nil {
			break
		}
		pg.stop()
		if !errors.Is(err, errEarlyExit) || attempt == 3 {
			return nil, err
		}
	}
	if err := pg.bootstrap(ctx); err != nil {
		pg.stop()
		return nil, err
	}
	return pg, nil
}

// run starts postgres on a fresh free port and waits until it accepts the
// superuser.
func (pg *pgServer) run(ctx context.Context, bin, dataDir, sockDir, logPath string, cred *syscall.Credential) error {
	port, err := FreePort()
	if err != nil {
		return err
	}
	pg.port = port
	cmd := exec.Command(filepath.Join(bin, "postgres"),
		"-D", dataDir, "-p", strconv.Itoa(port), "-k", sockDir,
		"-c", "listen_addresses=127.0.0.1",
		// Durability is pointless for a throwaway cluster; speed is not.
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "password_encryption=scram-sha-256")
	cmd.Dir = filepath.Dir(dataDir)
	cmd.Env = minimalEnv(filepath.Dir(dataDir))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	// SIGQUIT is PostgreSQL's immediate shutdown: the postmaster takes its
	// backends down with it.
	pg.proc, err = startProc("postgres", cmd, logPath, syscall.SIGQUIT)
	if err != nil {
		return err
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		if pg.proc.exited() {
			return fmt.Errorf("%w: %w", errEarlyExit, pg.proc.exitError())
		}
		c, err := pgx.ConnectConfig(ctx, pg.config(pgSuperuser, pg.superPass, "postgres"))
		if err == nil {
			return c.Close(ctx)
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("postgres on port %d not ready (log %s): %w", port, logPath, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// config is the pgx configuration for user on database db over TCP.
func (pg *pgServer) config(user, password, db string) *pgx.ConnConfig {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s sslmode=disable connect_timeout=5", pg.port, db))
	if err != nil {
		panic(err) // the string above is constant but for the port
	}
	cfg.User = user
	cfg.Password = password
	// PG* variables of the caller must not point the bed elsewhere.
	cfg.TLSConfig = nil
	cfg.Fallbacks = nil
	cfg.RuntimeParams = map[string]string{"application_name": "podlease-testbed"}
	return cfg
}

// bootstrap creates PGAdminUser, PGDatabase with its items table, and
// PGStaticUser.
func (pg *pgServer) bootstrap(ctx context.Context) error {
	super, err := pgx.ConnectConfig(ctx, pg.config(pgSuperuser, pg.superPass, "postgres"))
	if err != nil {
		return fmt.Errorf("connect as superuser: %w", err)
	}
	defer super.Close(ctx)
	for _, stmt := range []string{
		fmt.Sprintf(`CREATE ROLE %s WITH LOGIN CREATEROLE NOSUPERUSER PASSWORD '%s'`, PGAdminUser, pg.adminPass),
		fmt.Sprintf(`CREATE DATABASE %s OWNER %s`, PGDatabase, PGAdminUser),
		fmt.Sprintf(`CREATE ROLE %s WITH LOGIN NOSUPERUSER PASSWORD '%s'`, PGStaticUser, randomHex(16)),
		// CREATEROLE alone lets vaultadmin alter static_app on PostgreSQL
		// 15; from 16 on it also needs ADMIN OPTION on the role.
		fmt.Sprintf(`GRANT %s TO %s WITH ADMIN OPTION`, PGStaticUser, PGAdminUser),
	} {
		if _, err := super.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("bootstrap postgres: %w", err)
		}
	}

	admin, err := pgx.ConnectConfig(ctx, pg.config(PGAdminUser, pg.adminPass, PGDatabase))
	if err != nil {
		return fmt.Errorf("connect as %s: %w", PGAdminUser, err)
	}
	defer admin.Close(ctx)
	for _, stmt := range []string{
		`CREATE TABLE items (id int, name text)`,
		`INSERT INTO items (id, name) VALUES (1, 'apple'), (2, 'banana')`,
	} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("create table items: %w", err)
		}
	}
	return nil
}

// stop shuts the cluster down (fast shutdown, then kill).
func (pg *pgServer) stop() {
	if pg == nil || pg.proc == nil {
		return
	}
	pg.proc.stop(syscall.SIGINT, 10*time.Second)
	pg.proc = nil
}
