// Package bench compares jtiguard with its peers on the same tokens and
// claims: golang-jwt v5 with the options a careful user sets, lestrrat-go/jwx
// v3, and the physical floor (base64url, the bare signature check from
// crypto/*, and a claims decode). It is its own module so that the peers
// never enter jtiguard's go.mod. `make bench` at the repository root runs it
// and writes the report (docs/bench.md, docs/bench.svg, README).
package bench
