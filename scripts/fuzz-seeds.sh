#!/usr/bin/env bash
# Writes the checked-in seed corpus of the fuzz targets, fuzz/seeds/<target>/, from the test
# fixtures (URLs of the policy tests and integration tests, the config files) and from
# certificates made here with openssl. The input formats are those of fuzz/harness.rs.
#   scripts/fuzz-seeds.sh        # rewrites fuzz/seeds/
set -euo pipefail
export LC_ALL=C # ${#x} counts bytes
cd "$(dirname "$0")/.."
out=fuzz/seeds
rm -rf "$out"
mkdir -p "$out"/{judge,wsframes,decode,config,project,audit}

seed() { # seed TARGET: stdin -> fuzz/seeds/TARGET/<sha1 of the input>, as libFuzzer names them
  local f
  f=$(mktemp)
  cat >"$f"
  mv "$f" "$out/$1/$(sha1sum <"$f" | cut -c1-40)"
}
be16() { printf "\\x$(printf %02x $(($1 >> 8)))\\x$(printf %02x $(($1 & 255)))"; }

# --- judge: flags prefix client-kind [client] api method port(2), then NUL-separated fields
# url hint proxy-authorization appid referer content-type api-header connect-host method.
# client-kind 3 + preset 0 = 192.168.1.20; api byte used when flags bit 2 is set.
judge() { # judge FLAGS API PORT FIELDS...
  local flags=$1 api=$2 port=$3
  shift 3
  {
    printf "\\x$(printf %02x "$flags")\\x18\\x03\\x00\\x$(printf %02x "$api")\\x00"
    be16 "$port"
    local first=1 f
    for f in "$@"; do
      [ $first = 1 ] || printf '\0'
      first=0
      printf '%s' "$f"
    done
  } | seed judge
}
urls=$(grep -ohE "(https?|wss?|tcp)://[^\"' ,)\`]*" src/policy/tests.rs tests/*.rs config/*.yaml config/examples/*.yaml | sort -u)
while IFS= read -r url; do
  case "$url" in
    wss://* | ws://*) judge 4 3 443 "$url" ;;
    tcp://*) judge 4 4 7000 "$url" ;;
    *) judge 0 0 443 "$url" ;;
  esac
done <<<"$urls"
judge 0 0 443 'https://api.example.com/v1' '' '' 'wx0123456789abcdef' '' '' '' 'api.example.com'
judge 0 0 443 'https://evil.example.net\@api.example.com/'
judge 0 0 443 'https://api.example.com:443/' 'https://api.example.com/'
judge 0 0 8443 'https://port.example.com:8443/x' '' 'Basic d3hmZWRjYmE5ODc2NTQzMjEwOng=' '' 'https://servicewechat.com/wxfedcba9876543210/0/page-frame.html'
judge 0 0 443 'http://192.168.1.7:8080/lan' '' '' '' '' 'multipart/form-data; boundary=x' 'uploadFile' '192.168.1.7'
judge 0 0 443 'https://[::ffff:192.168.1.7]/' '' '' '' '' '' '' '[::ffff:192.168.1.7]'
judge 1 0 443 'https://API.WEIXIN.QQ.COM./cgi-bin/token' '' '' '' '' '' '' 'api.weixin.qq.com.'
judge 1 0 443 'https://api.weixin.qq.com%2e/' '' '' '' '' '' '' 'API.weixin.qq.com'
judge 2 0 9443 'wss://wsport.example.com:9443/chat' '' '' '' '' '' '' 'wsport.example.com'
judge 4 4 22 'tcp://any.example.com:22' '' '' '' '' '' '' 'any.example.com'
judge 4 4 3306 'tcp://db.example.com:3306' '' '' '' '' '' '' 'db.example.com'
judge 4 0 443 'https://中国.cn/' '' '' '' '' '' '' 'xn--fiqs8s.cn'
judge 0 0 443 'https://localhost/' '' '' '' '' '' '' 'localhost'
judge 0 255 443 'https://cdn.example.com/f.zip' '' '' 'wx0123456789abcdef' '' '' '' '' 'PATCH'

# --- wsframes: masked code(2) reason-len reason n-cuts cuts, then the stream.
ws() { # ws MASKED CODE REASON CUTS(hex bytes, first = count) STREAM(printf format)
  { printf "\\x$1"; be16 "$2"; printf "\\x$(printf %02x ${#3})%s" "$3"; printf "$4"; printf "$5"; } | seed wsframes
}
ws 00 1000 interrupted '\x00' '\x81\x05hello'
ws 01 1000 interrupted '\x02\x01\x03' '\x81\x85\x01\x02\x03\x04abcde\x88\x00'
ws 00 1001 bye '\x03\x02\x02\x02' "\\x82\\x7e\\x00\\x80$(printf 'x%.0s' $(seq 128))\\x8a\\x00"
ws 01 4000 '' '\x01\x05' '\x82\xff\x00\x00\x00\x00\x00\x01\x00\x00\x01\x02\x03\x04partial'
ws 00 1000 'δύο λέξεις και ακόμα περισσότερες λέξεις για να ξεπεράσουμε το όριο των εκατόν είκοσι τριών' '\x00' '\x89\x00'

# --- decode: flags mime label extra content-encoding n-chunks chunks ct-len ct, then the body.
# mime 0 text/html, 3 application/json; labels 0 none, 1 utf-8, 3 gbk, 5 gb18030, 6 big5,
# 7 shift_jis, 15 utf-16, 16 UTF-16BE, 19 iso-2022-kr, 21 klingon, 22 "gbk".
dec() { # dec FLAGS MIME LABEL EXTRA ENC CHUNKS(printf) CT BODY(printf)
  { printf "\\x$1\\x$2\\x$3\\x$4\\x$5"; printf "$6"; printf "\\x$(printf %02x ${#7})%s" "$7"; printf "$8"; } | seed decode
}
dec 00 00 03 00 00 '\x00' '' '\xc4\xe3\xba\xc3'
dec 01 03 03 02 00 '\x02\x01\x01' '' '{"k":"\xc4\xe3\xba\xc3"}'
dec 02 00 01 00 00 '\x01\x02' '' '\xef\xbb\xbf{"a":1}'
dec 03 00 00 00 00 '\x00' '' '\xef\xbb\xbfplain'
dec 00 00 0f 00 00 '\x00' '' '\xff\xfeh\x00i\x00'
dec 01 00 10 04 00 '\x03\x01\x01\x01' '' '\xfe\xff\x00h\x00i'
dec 00 00 07 00 00 '\x00' '' '\x82\xb1\x82\xf1\x82\xc9\x82\xbf\x82\xcd'
dec 00 00 06 00 00 '\x00' '' '\xbbO\xc6W'
dec 00 00 03 00 00 '\x00' '' 'bad \x81'
dec 01 00 03 00 00 '\x01\x05' '' 'split \x81'
dec 00 00 13 00 00 '\x00' '' 'x'
dec 00 00 15 00 00 '\x00' '' 'x'
dec 00 00 16 01 00 '\x00' '' '\xc4\xe3'
dec 00 00 05 00 01 '\x00' '' '\x84\x31\x95\x33gzip?'
dec 04 00 00 00 00 '\x00' 'text/html; charset="gbk"; q=1' '\xc4\xe3\xba\xc3'
dec 04 00 00 00 00 '\x00' 'application/vnd.api+json;CHARSET=utf-16le' 'a\x00'
dec 05 00 00 00 00 '\x02\x01\x00' 'text/plain; charset=' '\xef\xbb'

# --- config: the config files and the fuzz config.
for f in config/wxsandbox.yaml config/examples/*.yaml; do seed config <"$f"; done
sed -n '/pub const YAML: &str = r#"/,/^"#;/p' fuzz/harness.rs | sed '1d;$d' | seed config

# --- project: flags (bit i: file i written) then project.config.json, project.private.config.json,
# app.json, game.json, NUL-separated.
proj() { { printf "\\x$1"; printf '%s\0%s\0%s\0%s' "$2" "$3" "$4" "$5"; } | seed project; }
proj 05 '{"appid":"wx0123456789abcdef","projectname":"demo"}' '' '{"pages":["pages/index/index"],"networkTimeout":{"request":120}}' ''
proj 0f '{"appid":"wx0123456789abcdef","miniprogramRoot":"miniprogram"}' '{"appid":"wxfedcba9876543210"}' '{"networkTimeout":{"request":10000,"connectSocket":5000,"uploadFile":1,"downloadFile":2}}' '{"networkTimeout":{"request":1}}'
proj 09 '{"appid":"wx0123456789abcdef","miniprogramRoot":"./"}' '' '' '{"networkTimeout":{"request":3000}}'
proj 03 '{"appid":"wx0123456789abcdef"}' '{"appid":null,"miniprogramRoot":"../x"}' '' ''
proj 01 '{"appid":17}' '' '' ''

# --- audit: flags (bit 0 public root, bits 1-2 server name) then len(2) DER, leaf first.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ossl() { openssl "$@" >/dev/null 2>&1; }
der() { openssl x509 -in "$1" -outform DER; }
chain() { # chain FLAGS PEM...
  {
    printf "\\x$1"
    shift
    local c
    for c in "$@"; do
      der "$c" >"$tmp/c.der"
      be16 "$(stat -c %s "$tmp/c.der")"
      cat "$tmp/c.der"
    done
  } | seed audit
}
cd "$tmp"
ossl req -x509 -newkey rsa:2048 -nodes -keyout self.key -out self.pem -days 30 -subj /CN=example.com -addext subjectAltName=DNS:example.com
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 3650 -subj /CN=Fuzz-CA
ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr -subj /CN=api.example.com
printf 'subjectAltName=DNS:api.example.com\n' >leaf.ext
ossl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 90 -sha256 -extfile leaf.ext
ossl req -newkey rsa:1024 -nodes -keyout weak.key -out weak.csr -subj /CN=example.com
ossl x509 -req -in weak.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out weak.pem -days 1000 -sha1
ossl req -x509 -newkey ed25519 -nodes -keyout ed.key -out ed.pem -days 400 -subj /CN=example.com
cd - >/dev/null
chain 00 "$tmp/self.pem"
chain 03 "$tmp/leaf.pem" "$tmp/ca.pem"
chain 02 "$tmp/leaf.pem"
chain 01 "$tmp/weak.pem" "$tmp/ca.pem"
chain 00 "$tmp/ed.pem"
chain 00 "$tmp/ca.pem" "$tmp/leaf.pem" "$tmp/weak.pem" "$tmp/self.pem"

for t in judge wsframes decode config project audit; do
  echo "$t: $(find "$out/$t" -type f | wc -l) seeds"
done
