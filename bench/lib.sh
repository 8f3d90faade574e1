# Shared by the bench scripts: a throwaway cluster with the library preloaded,
# and nginx on loopback answering 204. Source it; call bench_cluster_start DIR PORT [extra conf lines].
BIN=/usr/lib/postgresql/15/bin

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

bench_cluster_start() {
    local dir=$1 port=$2; shift 2
    as_postgres "$BIN/pg_ctl" -D "$dir" stop -m immediate >/dev/null 2>&1 || true
    rm -rf "$dir"; mkdir -p "$dir"; [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_postgres "$BIN/initdb" -D "$dir" -A trust -U postgres >/dev/null
    # A private copy of the library: a reinstall by another build during the run
    # would otherwise pull the mapped file from under the server (SIGBUS).
    mkdir -p "$dir.lib"
    cp "$(pg_config --pkglibdir)/webhook_outbox.so" "$dir.lib/"
    {
        echo "dynamic_library_path='$dir.lib:\$libdir'"
        echo "port=$port"
        echo "listen_addresses='127.0.0.1'"
        echo "unix_socket_directories='$dir'"
        echo "shared_preload_libraries='webhook_outbox'"
        echo "shared_buffers=1GB"
        echo "max_wal_size=8GB"
        echo "webhook_outbox.allowed_cidrs='127.0.0.0/8'"
        echo "webhook_outbox.allow_http=on"
        for line in "$@"; do echo "$line"; done
    } >> "$dir/postgresql.conf"
    as_postgres "$BIN/pg_ctl" -D "$dir" -l "$dir/log" -w start >/dev/null
    # The psql binary itself: Debian's /usr/bin/psql is a Perl wrapper, too costly to poll with.
    PSQL="$BIN/psql -X -q -h $dir -p $port -U postgres -d postgres -v ON_ERROR_STOP=1"
    $PSQL -c 'CREATE EXTENSION webhook_outbox'
}

bench_cluster_stop() { as_postgres "$BIN/pg_ctl" -D "$1" stop -m fast >/dev/null 2>&1 || true; }

# nginx answering 204 to everything, one worker process, keep-alive without
# limit. TLS=1: HTTPS instead, with a certificate for 127.0.0.1 signed by a
# throwaway CA ($dir/ca.pem, for webhook_outbox.ca_file). H2=1: HTTPS that
# also offers HTTP/2 by ALPN.
nginx_start() {
    local dir=$1 port=$2 listen tls=""
    mkdir -p "$dir"
    listen="listen 127.0.0.1:$port;"
    if [ "${TLS:-0}" = 1 ] || [ "${H2:-0}" = 1 ]; then
        tls_certificates "$dir"
        listen="listen 127.0.0.1:$port ssl;"
        [ "${H2:-0}" = 1 ] && listen="listen 127.0.0.1:$port ssl http2;"
        tls="ssl_certificate $dir/server.pem; ssl_certificate_key $dir/server.key; ssl_session_cache shared:SSL:1m;"
    fi
    cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_buffer_size 16k;
    server {
        $listen
        $tls
        location / { return 204; }
    }
}
CONF
    nginx_stop "$dir"
    nginx -c "$dir/nginx.conf"
}

# A CA and a server certificate for 127.0.0.1 (IP SAN), made once per directory.
tls_certificates() {
    local dir=$1
    [ -f "$dir/server.pem" ] && return
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
        -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
    chmod 644 "$dir/ca.pem"
}

# A pid file left by an nginx already gone is no error (set -e would end the script).
nginx_stop() { if [ -f "$1/nginx.pid" ]; then kill "$(cat "$1/nginx.pid")" 2>/dev/null || true; fi; sleep 0.2; }

# SQL for an AFTER INSERT trigger on TABLE (an order table: id, customer,
# amount) that emit()s an 'order.paid' event for each row, as applications
# wire the outbox to their hot tables.
emitting_trigger_sql() {
    cat <<SQL
CREATE FUNCTION order_paid() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    PERFORM webhook_outbox.emit('order.paid',
                                jsonb_build_object('order_id', NEW.id, 'amount', NEW.amount, 'customer', NEW.customer),
                                subject_id => NEW.customer);
    RETURN NULL;
END \$\$;
CREATE TRIGGER order_paid AFTER INSERT ON $1 FOR EACH ROW EXECUTE FUNCTION order_paid();
SQL
}
