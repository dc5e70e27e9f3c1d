#!/usr/bin/env bash
# Test certificates for the TLS tests (protocol section 12). Made once with
# OpenSSL 3 and committed: the tests need no generator. Run again to remake
# them (the valid ones last 100 years; `expired` ended in 2020).
#   ca          the roots the tests trust           (ECDSA P-256)
#   server      localhost, 127.0.0.1, ::1 by ca
#   other-name  only "feed.example" by ca           (a wrong-name test)
#   expired     localhost by ca, not valid after 2020
#   rogue-ca, rogue-server: localhost by a CA nobody trusts
#   client      a client certificate by ca          (mutual TLS)
set -euo pipefail
cd "$(dirname "$0")"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
ca() {
  key "$1"
  openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 36500 -sha256 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -out "$1.pem"
}
leaf() { # name ca subject-alt-names ext-usage [not-before not-after]
  key "$1"
  openssl req -new -key "$1.key" -subj "/CN=$1" -out "$1.csr"
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s\n' \
    "$4" "${3:+subjectAltName=$3}" > "$1.ext"
  if [ $# -ge 6 ]; then
    # `openssl ca`: OpenSSL 3.0's x509 cannot set dates in the past.
    local db; db="$(mktemp -d)"
    touch "$db/index.txt"
    printf '[ca]\ndefault_ca=d\n[d]\ndatabase=%s/index.txt\nnew_certs_dir=%s\nserial=%s/serial\npolicy=p\ndefault_md=sha256\n[p]\ncommonName=supplied\n' \
      "$db" "$db" "$db" > "$db/ca.cnf"
    echo 01 > "$db/serial"
    openssl ca -batch -config "$db/ca.cnf" -cert "$2.pem" -keyfile "$2.key" -in "$1.csr" \
      -startdate "$5" -enddate "$6" -extfile "$1.ext" -notext -out "$1.pem" 2>/dev/null
    rm -rf "$db"
  else
    openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -sha256 \
      -days 36500 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  fi
  rm -f "$1.csr" "$1.ext"
}
ca ca "tickwire test CA"
ca rogue-ca "tickwire rogue CA"
leaf server ca "DNS:localhost,IP:127.0.0.1,IP:::1" serverAuth
leaf other-name ca "DNS:feed.example" serverAuth
leaf expired ca "DNS:localhost,IP:127.0.0.1" serverAuth 20190101000000Z 20200101000000Z
leaf rogue-server rogue-ca "DNS:localhost,IP:127.0.0.1" serverAuth
leaf client ca "" clientAuth
rm -f ./*.srl
chmod 600 ./*.key
