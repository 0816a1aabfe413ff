#!/usr/bin/env bash
# Writes identical-intent configs for keepup-lb, HAProxy and nginx into DIR
# for W worker threads/processes, and the backends' config (one nginx
# worker serving 3 small and 3 16 KiB ports). Used by bench/lb.sh.
# Every proxy adds the same headers keepup adds: X-Forwarded-For,
# X-Forwarded-Proto, X-Forwarded-Host and Forwarded.
set -euo pipefail
dir="$1"
W="$2"
SMALL=(19001 19002 19003)
BIG=(19011 19012 19013)

{
    echo "workers = $W"
    for fe in "small 18181 small http" "big 18182 big http" "tcp 18183 small tcp"; do
        set -- $fe
        cat <<EOT
[[frontend]]
name = "$1"
bind = "127.0.0.1:$2"
pool = "$3"
mode = "$4"
max_connections = 8000
backlog = 4096
EOT
    done
    for pool in small big; do
        echo "[[pool]]"
        echo "name = \"$pool\""
        echo "passive_fall = 0"
        if [ $pool = small ]; then ports=("${SMALL[@]}"); else ports=("${BIG[@]}"); fi
        i=0
        for p in "${ports[@]}"; do
            i=$((i + 1))
            printf '[[pool.backend]]\nname = "b%s"\naddress = "127.0.0.1:%s"\n' "$i" "$p"
        done
    done
} >"$dir/keepup.toml"

{
    cat <<EOT
global
    nbthread $W
    maxconn 8000
    log stderr format raw local0 emerg
defaults
    mode http
    option http-keep-alive
    timeout connect 2s
    timeout client 60s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 60s
    maxconn 8000
EOT
    for fe in "small 18281" "big 18282"; do
        set -- $fe
        cat <<EOT
frontend $1
    bind 127.0.0.1:$2 backlog 4096
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request add-header Forwarded for=%[src];proto=http
    default_backend $1
EOT
    done
    cat <<EOT
frontend tcp
    mode tcp
    bind 127.0.0.1:18283 backlog 4096
    default_backend tcp
backend small
    balance roundrobin
    http-reuse always
EOT
    i=0; for p in "${SMALL[@]}"; do i=$((i + 1)); echo "    server b$i 127.0.0.1:$p"; done
    echo "backend big"
    echo "    balance roundrobin"
    echo "    http-reuse always"
    i=0; for p in "${BIG[@]}"; do i=$((i + 1)); echo "    server b$i 127.0.0.1:$p"; done
    echo "backend tcp"
    echo "    mode tcp"
    echo "    balance roundrobin"
    i=0; for p in "${SMALL[@]}"; do i=$((i + 1)); echo "    server b$i 127.0.0.1:$p"; done
} >"$dir/haproxy.cfg"

mkdir -p "$dir/nginx-tmp"
# nginx's temp directories under DIR (prefix PREFIX), one line each.
temp_paths() {
    local t
    for t in client_body proxy fastcgi uwsgi scgi; do
        printf '    %s_temp_path %s/nginx-tmp/%s%s;\n' "$t" "$dir" "$1" "${t%_body}"
    done
}
{
    cat <<EOT
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes $W;
daemon off;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
worker_rlimit_nofile 18000;
events { worker_connections 8000; multi_accept on; }
http {
    access_log off;
$(temp_paths "")
    keepalive_requests 100000000;
    keepalive_timeout 60s;
EOT
    for pool in small big; do
        if [ $pool = small ]; then ports=("${SMALL[@]}"); else ports=("${BIG[@]}"); fi
        echo "    upstream $pool {"
        for p in "${ports[@]}"; do echo "        server 127.0.0.1:$p;"; done
        echo "        keepalive 1024;"
        echo "        keepalive_requests 100000000;"
        echo "    }"
    done
    for fe in "18381 small" "18382 big"; do
        set -- $fe
        cat <<EOT
    server {
        listen 127.0.0.1:$1 reuseport backlog=4096;
        location / {
            proxy_pass http://$2;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header Forwarded "for=\$remote_addr;proto=\$scheme";
        }
    }
EOT
    done
    echo "}"
    echo "stream {"
    echo "    upstream tcp {"
    for p in "${SMALL[@]}"; do echo "        server 127.0.0.1:$p;"; done
    echo "    }"
    echo "    server { listen 127.0.0.1:18383 reuseport backlog=4096; proxy_pass tcp; }"
    echo "}"
} >"$dir/nginx.conf"

# The backends: one nginx worker, a fixed 13-byte body on the small ports
# and a 16 KiB file on the big ones (nginx is the cheapest HTTP server here
# per request, so the proxies, not the backends, are what is measured).
mkdir -p "$dir/www"
head -c 16384 /dev/zero | tr '\0' x >"$dir/www/big.txt"
{
    cat <<EOT
worker_processes 1;
daemon off;
pid $dir/backends.pid;
error_log $dir/backends-error.log warn;
worker_rlimit_nofile 18000;
events { worker_connections 8000; }
http {
    access_log off;
    sendfile on;
$(temp_paths b)
    keepalive_requests 100000000;
    keepalive_timeout 60s;
EOT
    for p in "${SMALL[@]}"; do
        echo "    server { listen 127.0.0.1:$p backlog=4096; location / { default_type text/plain; return 200 \"hello, world\\n\"; } }"
    done
    for p in "${BIG[@]}"; do
        echo "    server { listen 127.0.0.1:$p backlog=4096; location / { default_type text/plain; root $dir/www; try_files /big.txt =404; } }"
    done
    echo "}"
} >"$dir/backends.conf"
