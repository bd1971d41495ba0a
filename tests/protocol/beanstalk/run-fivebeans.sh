#!/usr/bin/env bash
# Run fivebeans@1.5.0's own mocha tests (test/*.js, as shipped in its npm tarball)
# against a beanstalk-protocol server at HOST:PORT.
#   usage: run-fivebeans.sh HOST PORT RESULTS.xml [WORKDIR]
# WORKDIR holds node_modules with fivebeans, mocha and must (default: this
# directory, as `npm ci --prefix tests/protocol/beanstalk` installs them from its
# package-lock.json; a missing install is made there first).
# Writes mocha's xunit XML to RESULTS.xml, prints one PASS/FAIL/SKIP line a test, exits with
# mocha's status (= number of failed tests; 1 against Debian's beanstalkd 1.12 on
# Node 20, see report). Needs node + npm and the npm registry (first run only).
set -euo pipefail
host=$1 port=$2 out=$(realpath -m "$3") work=${4:-$(dirname "$(realpath "$0")")}
if [ ! -d "$work/node_modules/fivebeans" ]; then
  npm ci --prefix "$work" --no-audit --no-fund --loglevel=error >/dev/null
fi
fb=$work/node_modules/fivebeans
# The tests hard-code 127.0.0.1:11300 in four places; lib/client.js's DEFAULT_PORT
# matters too because test-client.js builds its producer as new client(host).
# test-runner.js asserts the fixture's host is 'localhost', so only its port changes.
sed -i -E "s/^var host = '[^']*';/var host = '$host';/; s/^var port = [0-9]+;/var port = $port;/" \
  "$fb/test/test-client.js" "$fb/test/test-worker.js"
sed -i -E "s/^var DEFAULT_HOST( *)= '[^']*';/var DEFAULT_HOST\1= '$host';/; s/^var DEFAULT_PORT( *)= [0-9]+;/var DEFAULT_PORT\1= $port;/" \
  "$fb/lib/client.js"
sed -i -E "s/^( *port:) [0-9]+/\1 $port/" "$fb/test/fixtures/runner.yml" "$fb/test/fixtures/badconfig.yml"
cd "$fb"   # the tests read ./test/test.png and test/fixtures/*.yml relative to cwd
rc=0
../.bin/mocha -t 8000 -R xunit --reporter-options output="$out" test/ || rc=$?
# one line per test from the XML: PASS / FAIL / SKIP and the full title
python3 - "$out" <<'PY'
import sys, xml.etree.ElementTree as ET
n = {'PASS': 0, 'FAIL': 0, 'SKIP': 0}
for tc in ET.parse(sys.argv[1]).getroot().iter('testcase'):
    kids = {c.tag: c for c in tc}
    s = 'FAIL' if ('failure' in kids or 'error' in kids) else 'SKIP' if 'skipped' in kids else 'PASS'
    n[s] += 1
    msg = (kids.get('failure') if 'failure' in kids else kids.get('error'))
    text = ((msg.get('message') or msg.text or '') if msg is not None else '').strip()
    extra = ('  -- ' + text.splitlines()[0][:160]) if text else ''
    print(f"{s} {tc.get('classname')} {tc.get('name')}{extra}")
print(f"fivebeans: {n['PASS']} passed, {n['FAIL']} failed, {n['SKIP']} skipped")
PY
exit $rc
