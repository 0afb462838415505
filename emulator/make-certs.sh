#!/bin/sh
# make-certs.sh OUTDIR — test certificates for the local DPS emulator.
#
# Uses the openssl CLI only; every key is EC P-256, but the certificate
# issuance CAs' (P-384, as the service issues). Idempotent: when OUTDIR
# already holds every file (and server.pem is still valid for a day) it does
# nothing. Otherwise it builds everything in a temporary folder next to OUTDIR
# and renames that folder into place, so a half-written OUTDIR is never seen.
# The files are throw-away test material: never commit them. Certificates
# are written 0644, private keys 0600 (as a device keeps them).
set -eu

if [ "$#" -ne 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
OUT=$1
case $OUT in
	/*) ;;
	*) OUT=$(pwd)/$OUT ;;
esac

FILES="ca.pem ca.key server.pem server.key expired.pem expired.key
other-ca.pem other-ca.key device-root-ca.pem device-root-ca.key
device-int-ca.pem device-int-ca.key
x509-device-01.pem x509-device-01.key x509-device-01-chain.pem x509-device-01-enc.key
x509-device-02.pem x509-device-02.key x509-device-02-chain.pem
x509-self-01.pem x509-self-01.key rogue.pem rogue.key"
# certificate issuance (emu_csr.lua), added later: a folder that lacks only
# these gets them added, its other certificates left as they are (a running
# emulator and its clients keep trusting each other)
ISSUANCE="issuance-root-ca.pem issuance-root-ca.key issuance-ca.pem issuance-ca.key"

# complete DIR [FILES]: every file there (FILES: all of them), sound
complete() {
	for f in ${2:-$FILES $ISSUANCE}; do
		[ -s "$1/$f" ] || return 1
	done
	# keys from an older run of this script were 0644: make them again
	[ -z "$(find "$1" -name '*.key' -perm /077)" ] || return 1
	# the encrypted key of older runs was PKCS#8 (AES), which mbedTLS 2.28 cannot decrypt
	grep -q 'Proc-Type: 4,ENCRYPTED' "$1/x509-device-01-enc.key" || return 1
	openssl x509 -in "$1/server.pem" -noout -checkend 86400 >/dev/null 2>&1 || return 1
	# valid since 3 days ago at least (older runs of this script: from the moment they ran)
	since=$(openssl x509 -in "$1/server.pem" -noout -startdate | sed 's/^notBefore=//')
	[ $(($(date -u +%s) - $(date -u -d "$since" +%s))) -ge 259200 ]
}

if [ -d "$OUT" ] && complete "$OUT"; then
	exit 0
fi
ADD_ISSUANCE=
if [ -d "$OUT" ] && complete "$OUT" "$FILES"; then
	ADD_ISSUANCE=1
fi

mkdir -p "$(dirname "$OUT")"
TMP=$(mktemp -d "$OUT.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM
cd "$TMP"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:"${CURVE:-P-256}" -out "$1.key" 2>/dev/null; }
serial() { echo "0x$(openssl rand -hex 8)"; }

# ext NAME LINES… — write an extension section file NAME.ext
ext() {
	name=$1; shift
	{ echo "[v3]"; for l in "$@"; do echo "$l"; done; } > "$name.ext"
}

# selfsigned NAME CN DAYS EXTLINES… (CURVE and MD: the key's curve and the digest)
selfsigned() {
	name=$1 cn=$2 days=$3; shift 3
	key "$name"
	ext "$name" "$@"
	# the extension file doubles as the (minimal) req configuration
	openssl req -new -x509 -key "$name.key" -subj "/CN=$cn" -days "$days" \
		-set_serial "$(serial)" -"${MD:-sha256}" -config "$name.ext" -extensions v3 \
		-out "$name.pem"
	rm -f "$name.ext"
}

# signed NAME CN ISSUER DAYS EXTLINES…
signed() {
	name=$1 cn=$2 issuer=$3 days=$4; shift 4
	key "$name"
	ext "$name" "$@"
	openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr"
	openssl x509 -req -in "$name.csr" -CA "$issuer.pem" -CAkey "$issuer.key" \
		-set_serial "$(serial)" -days "$days" -"${MD:-sha256}" \
		-extfile "$name.ext" -extensions v3 -out "$name.pem" 2>/dev/null
	rm -f "$name.csr" "$name.ext"
}

CA_EXT="basicConstraints=critical,CA:TRUE"
CA_KU="keyUsage=critical,keyCertSign,cRLSign"
SKI="subjectKeyIdentifier=hash"
AKI="authorityKeyIdentifier=keyid"
LEAF_KU="keyUsage=critical,digitalSignature"

# --- certificate issuance ----------------------------------------------------
# The emulator's own root and issuing CA (P-384, SHA-384), from which it issues
# devices their operational certificates (issuance root -> issuing CA -> leaf).
issuance() {
	CURVE=P-384 MD=sha384 selfsigned issuance-root-ca "DPS Emulator Issuance Root CA" 3650 \
		"$CA_EXT" "$CA_KU" "$SKI"
	CURVE=P-384 MD=sha384 signed issuance-ca "DPS Emulator Issuing CA" issuance-root-ca 3650 \
		"basicConstraints=critical,CA:TRUE,pathlen:0" "$CA_KU" "$SKI" "$AKI"
	rm -f ./*.ext ./*.srl
	chmod 644 issuance-*.pem
	chmod 600 issuance-*.key
}

if [ -n "$ADD_ISSUANCE" ]; then
	issuance
	# keys first: a certificate is never there without its key
	for f in issuance-root-ca.key issuance-ca.key issuance-root-ca.pem issuance-ca.pem; do
		mv -f "$f" "$OUT/$f"
	done
	exit 0
fi

# --- server side -------------------------------------------------------------
# The server CA and certificate are valid from 30 days ago (openssl ca sets the
# dates), so a client whose clock is 2 days behind still trusts them (the
# wrong-clock specs run it under faketime); 5 years behind is still refused.
SINCE=$(date -u -d '30 days ago' +%Y%m%d%H%M%SZ)
UNTIL=$(date -u -d '3650 days' +%Y%m%d%H%M%SZ)
mkdir -p ca-db
: > ca-db/index.txt
openssl rand -hex 8 > ca-db/serial
printf '%s\n' "[ca]" "default_ca = emu" "[emu]" "database = ca-db/index.txt" "serial = ca-db/serial" \
	"new_certs_dir = ca-db" "default_md = sha256" "policy = any" "unique_subject = no" \
	"copy_extensions = none" "[any]" "commonName = supplied" \
	"[v3]" "$CA_EXT" "$CA_KU" "$SKI" \
	"[srv]" "basicConstraints=CA:FALSE" "$LEAF_KU" "extendedKeyUsage=serverAuth" \
	"subjectAltName=DNS:localhost" "$SKI" "$AKI" > ca-db/since.cnf
key ca
openssl req -new -key ca.key -subj "/CN=DPS Emulator Test Server CA" -out ca.csr
openssl ca -batch -config ca-db/since.cnf -selfsign -keyfile ca.key -in ca.csr -out ca.pem -notext \
	-startdate "$SINCE" -enddate "$UNTIL" -extensions v3 2>/dev/null
key server
openssl req -new -key server.key -subj "/CN=localhost" -out server.csr
openssl ca -batch -config ca-db/since.cnf -cert ca.pem -keyfile ca.key -in server.csr -out server.pem \
	-notext -startdate "$SINCE" -enddate "$UNTIL" -extensions srv 2>/dev/null
rm -rf ca-db ca.csr server.csr

# expired.pem: same CA, validity entirely in the past (openssl ca sets the dates)
key expired
openssl req -new -key expired.key -subj "/CN=localhost" -out expired.csr
mkdir -p ca-db
: > ca-db/index.txt
openssl rand -hex 8 > ca-db/serial
cat > ca-db/ca.cnf <<EOF
[ca]
default_ca = emu
[emu]
database = ca-db/index.txt
serial = ca-db/serial
new_certs_dir = ca-db
certificate = ca.pem
private_key = ca.key
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
[v3]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
EOF
openssl ca -batch -config ca-db/ca.cnf -in expired.csr -out expired.pem -notext \
	-startdate 20200101000000Z -enddate 20210101000000Z -extensions v3 2>/dev/null
rm -rf ca-db expired.csr

# an unrelated CA (clients that trust it must reject the emulator)
selfsigned other-ca "Unrelated Test CA" 3650 "$CA_EXT" "$CA_KU" "$SKI"

# --- device side -------------------------------------------------------------
selfsigned device-root-ca "DPS Emulator Device Root CA" 3650 "$CA_EXT" "$CA_KU" "$SKI"
signed device-int-ca "DPS Emulator Device Intermediate CA" device-root-ca 3650 \
	"basicConstraints=critical,CA:TRUE,pathlen:0" "$CA_KU" "$SKI" "$AKI"
for n in 01 02; do
	signed "x509-device-$n" "x509-device-$n" device-int-ca 3650 "basicConstraints=CA:FALSE" \
		"$LEAF_KU" "extendedKeyUsage=clientAuth" "$SKI" "$AKI"
	cat "x509-device-$n.pem" device-int-ca.pem > "x509-device-$n-chain.pem"
done
# Traditional PEM encryption (AES-256-CBC): readable by OpenSSL and by mbedTLS 2.28,
# which cannot decrypt AES inside PKCS#8 (spec/crypto_backend_spec.lua covers that).
openssl pkey -in x509-device-01.key -traditional -aes256 -passout pass:test-pass -out x509-device-01-enc.key

# self-signed device for an individual enrollment, and a rogue look-alike
selfsigned x509-self-01 x509-self-01 3650 "basicConstraints=CA:FALSE" "$LEAF_KU" \
	"extendedKeyUsage=clientAuth" "$SKI"
selfsigned rogue x509-device-01 3650 "basicConstraints=CA:FALSE" "$LEAF_KU" \
	"extendedKeyUsage=clientAuth" "$SKI"
rm -f ./*.ext ./*.srl
issuance

complete "$TMP"
chmod 755 "$TMP"
chmod 644 ./*.pem
chmod 600 ./*.key
cd /
if [ -d "$OUT" ]; then
	rm -rf "$OUT"
fi
# rename(2) of a folder onto a non-empty folder fails: if another process won
# the race, keep its copy
if ! mv -T "$TMP" "$OUT" 2>/dev/null; then
	complete "$OUT" || { echo "make-certs.sh: could not create $OUT" >&2; exit 1; }
fi
exit 0
