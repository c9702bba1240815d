#!/usr/bin/env bash
# An emulated aarch64 "board" node for machines without a board: a Debian arm64 root file system
# run under qemu-user in a chroot, joined to a Ray head with `board join`, so the board side
# (aarch64 wheels, imports, the latency actor, token auth, version checks) can be tried for real.
# Its latencies are emulation speed, not an A53's: the node says so in EDGESWEEP_EMULATION.
#
#   scripts/arm-board.sh build                    build or reuse the rootfs, install '.[board]' into /opt/venv
#   scripts/arm-board.sh start --address HOST:PORT [--name imx8mp-qemu] [--token-file F] [--timeout S]
#   scripts/arm-board.sh stop                     end what `start` started, unmount what it mounted
#   scripts/arm-board.sh status                   rootfs, venv, node, mounts, paths, disk use
#
# Everything lives under ${EDGESWEEP_CACHE:-~/.cache/edgesweep}/arm-board/. Needs root (chroot,
# mounts, apt-get). Safe to run again: each step skips what is done.
set -euo pipefail

PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"; readonly PROJECT
readonly CACHE="${EDGESWEEP_CACHE:-$HOME/.cache/edgesweep}/arm-board"
readonly ROOT="$CACHE/rootfs"
readonly SUITE="bookworm"
readonly ROOTFS_STAMP="$CACHE/rootfs.done"   # written when debootstrap and the host files are complete
readonly VENV_STAMP="$CACHE/venv.sha256"     # sha256 of the pyproject.toml the venv was installed from
readonly PID_FILE="$CACHE/node.pid"          # pid pgid starttime address name log
readonly MOUNTS_FILE="$CACHE/mounts"         # one target per line, in the order they were mounted
readonly CPUINFO="$CACHE/cpuinfo"            # the fake ARM /proc/cpuinfo
readonly LOG_DIR="$CACHE/logs"
readonly TOKEN_IN_ROOT="/etc/edgesweep/auth_token"
readonly EMULATION="qemu-aarch64 (cortex-a53)"
readonly PIP_TIMEOUT=180

say() { printf '[arm-board] %s\n' "$*"; }
warn() { printf '[arm-board] warning: %s\n' "$*" >&2; }
die() { printf '[arm-board] error: %s\n' "$*" >&2; exit 1; }

usage() {
  cat <<EOF
usage: scripts/arm-board.sh COMMAND [options]

An emulated aarch64 board node (Debian $SUITE arm64 under qemu-user, in a chroot) for trying the
board side without a board. Its latencies are emulation speed and are labelled emulated.

commands:
  build                       build (or reuse) the arm64 rootfs and install '.[board]' into /opt/venv;
                              on a built rootfs it only re-syncs the project source (seconds)
  start --address HOST:PORT   start the board node joined to that Ray head and wait until it is up
        [--name NAME]         board name (default imx8mp-qemu)
        [--token-file F]      the head's auth token (default \$RAY_AUTH_TOKEN, else ~/.ray/auth_token)
        [--node-ip-address IP] the node's address as the head sees it (default: Ray picks it)
        [--timeout S]         seconds to wait for the node (default 300)
  stop                        end the processes start started (by pid), unmount what it mounted
  status                      rootfs, venv, node, mounts, paths and disk use

cache: $CACHE (set EDGESWEEP_CACHE to move it)
EOF
}

need_root() { [[ $(id -u) -eq 0 ]] || die "run as root: chroot, mounts and apt-get need it (sudo $0 $*)"; }

# One command at a time: two builds, or a stop during a build, would fight over mounts and files.
take_lock() {
  mkdir -p "$CACHE" "$LOG_DIR"
  exec 9>"$CACHE/lock"
  flock -n 9 || die "another arm-board.sh is running on $CACHE (lock $CACHE/lock)"
}

native_arm() { [[ $(uname -m) == aarch64 ]]; }

# --- the host side: qemu, binfmt_misc, debootstrap ------------------------------------------

ensure_host_tools() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if ! native_arm; then
    command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
    command -v update-binfmts >/dev/null || missing+=(binfmt-support)
  fi
  ((${#missing[@]} == 0)) && return
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  say "installing on the host: ${missing[*]}"
  # The package lists may be stale or absent (fresh containers): update once, then install.
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# The kernel runs aarch64 binaries through qemu only while binfmt_misc is mounted and the
# qemu-aarch64 entry is enabled; containers often have neither.
ensure_binfmt() {
  native_arm && return
  local dir=/proc/sys/fs/binfmt_misc
  if [[ ! -e $dir/register ]]; then
    say "mounting binfmt_misc"
    mount -t binfmt_misc binfmt_misc "$dir" || die "cannot mount binfmt_misc on $dir (a container without privileges?)"
  fi
  if [[ ! -e $dir/qemu-aarch64 ]] || ! grep -qx enabled "$dir/qemu-aarch64"; then
    say "enabling qemu-aarch64 in binfmt_misc"
    update-binfmts --enable qemu-aarch64 || die "update-binfmts --enable qemu-aarch64 failed"
  fi
}

debian_mirror() {
  if [[ -n ${EDGESWEEP_DEBIAN_MIRROR:-} ]]; then echo "$EDGESWEEP_DEBIAN_MIRROR"; return; fi
  # The mirror apt already uses here is the one known to be reachable; Ubuntu mirrors carry no Debian.
  local uri
  uri=$(apt-get indextargets --format '$(REPO_URI)' 2>/dev/null | grep -m1 '/debian/*$' || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

# The CA bundle the host's pip trusts (a proxy's CA may be in it), to copy to the same path.
host_pip_cert() {
  local cert="${PIP_CERT:-}"
  [[ -z $cert ]] && cert=$(pip3 config get global.cert 2>/dev/null ||
                           "$PROJECT/.venv/bin/pip" config get global.cert 2>/dev/null || true)
  [[ -z $cert && -f /etc/ssl/certs/ca-certificates.crt ]] && cert=/etc/ssl/certs/ca-certificates.crt
  echo "$cert"
}

# Host pip settings that make sense inside the chroot: only http(s) indexes (file:// ones and
# find-links point at x86 wheels on the host's disk).
host_pip_indexes() {
  local pip key value
  for pip in pip3 "$PROJECT/.venv/bin/pip"; do command -v "$pip" >/dev/null && break; done
  command -v "$pip" >/dev/null || return 0
  for key in index-url extra-index-url; do
    value=$("$pip" config get "global.$key" 2>/dev/null || true)
    value=$(tr ' ' '\n' <<<"$value" | grep -E '^https?://' | tr '\n' ' ' || true)
    [[ -n ${value// /} ]] && printf '%s = %s\n' "$key" "${value% }"
  done
  return 0
}

# Name resolution and TLS inside the chroot are the host's: copy them at every build and start.
copy_host_files() {
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
  cp -L /etc/hosts "$ROOT/etc/hosts"
  local cert; cert=$(host_pip_cert)
  {
    echo "[global]"
    echo "timeout = $PIP_TIMEOUT"
    echo "disable-pip-version-check = true"
    if [[ -n $cert && -f $cert ]]; then
      mkdir -p "$ROOT$(dirname "$cert")"
      cp -L "$cert" "$ROOT$cert"
      echo "cert = $cert"
    fi
    host_pip_indexes
  } >"$ROOT/etc/pip.conf"
}

# Bookworm arm64 minbase with Python; two stages so it works whether or not binfmt_misc has the
# "F" (fix binary) flag: the qemu binary is copied in before anything aarch64 runs.
build_rootfs() {
  if [[ -f $ROOTFS_STAMP && -x $ROOT/usr/bin/python3 ]]; then return; fi
  if [[ -e $ROOT ]]; then
    assert_nothing_mounted
    say "removing an unfinished rootfs at $ROOT"
    rm -rf --one-file-system "$ROOT"
  fi
  local mirror; mirror=$(debian_mirror)
  say "debootstrap $SUITE arm64 minbase from $mirror (about 5-8 minutes)"
  mkdir -p "$ROOT"
  local log="$LOG_DIR/debootstrap.log"
  local foreign=(--foreign) t0=$SECONDS; native_arm && foreign=()
  debootstrap --arch=arm64 --variant=minbase "${foreign[@]}" \
    --include=python3,python3-venv,python3-pip,ca-certificates "$SUITE" "$ROOT" "$mirror" >"$log" 2>&1 ||
    die "debootstrap failed; see $log and $ROOT/debootstrap/debootstrap.log"
  if ! native_arm; then
    cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/"
    chroot "$ROOT" /debootstrap/debootstrap --second-stage >>"$log" 2>&1 ||
      die "debootstrap's second stage failed; see $log and $ROOT/debootstrap/debootstrap.log"
  fi
  rm -rf "$ROOT/var/cache/apt/archives/"*.deb
  date -Is >"$ROOTFS_STAMP"
  say "rootfs ready in $((SECONDS - t0)) s"
}

# --- mounts ------------------------------------------------------------------------------------

is_mounted() { findmnt -rn --mountpoint "$1" >/dev/null 2>&1; }

# Mounts under the rootfs, deepest last, as findmnt lists them.
mounts_under_root() { findmnt -rn -o TARGET | grep -F "$ROOT/" || true; }

assert_nothing_mounted() {
  local left; left=$(mounts_under_root)
  [[ -z $left ]] || die "still mounted under $ROOT (run: $0 stop):"$'\n'"$left"
}

# Four Cortex-A53 cores. onnxruntime reads /proc/cpuinfo to pick kernels and segfaults under
# qemu-user on the host's x86 one; with this one (and QEMU_CPU=cortex-a53) ORT and LiteRT run.
write_cpuinfo() {
  local i
  for i in 0 1 2 3; do
    printf 'processor\t: %d\nBogoMIPS\t: 16.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n' "$i"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd03\nCPU revision\t: 4\n\n'
  done >"$CPUINFO"
}

# Each mount is made private at once: on hosts where / is shared (systemd), a bind of /dev or
# /proc joins the host's peer group, and the tmpfs on dev/shm or the file on proc/cpuinfo
# mounted next would otherwise appear on the host's /dev/shm and /proc/cpuinfo too.
mount_one() {  # mount_one TARGET mount-args...: mount unless mounted, and record it
  local target=$1; shift
  is_mounted "$target" && return
  mount "$@" "$target" || die "mount $* $target failed"
  echo "$target" >>"$MOUNTS_FILE"
  mount --make-private "$target" || die "mount --make-private $target failed"
}

mount_all() {
  write_cpuinfo
  touch "$MOUNTS_FILE"
  mount_one "$ROOT/proc" --bind /proc
  mount_one "$ROOT/proc/cpuinfo" --bind "$CPUINFO"
  if ! is_mounted "$ROOT/sys"; then  # read-only: nothing in the chroot should change the host's sysfs
    mount_one "$ROOT/sys" --bind /sys
    mount -o remount,bind,ro "$ROOT/sys" || warn "could not make $ROOT/sys read-only"
  fi
  mount_one "$ROOT/dev" --bind /dev
  mount_one "$ROOT/dev/pts" --bind /dev/pts
  # Ray's object store lives in /dev/shm: a tmpfs of its own keeps its files off the host's.
  mount_one "$ROOT/dev/shm" -t tmpfs -o mode=1777,nosuid,nodev tmpfs
  mount_one "$ROOT/tmp" -t tmpfs -o mode=1777,nosuid,nodev tmpfs
}

unmount_all() {
  local targets=() t i
  [[ -f $MOUNTS_FILE ]] && mapfile -t targets <"$MOUNTS_FILE"
  for ((i = ${#targets[@]} - 1; i >= 0; i--)); do
    t=${targets[i]}
    is_mounted "$t" || continue
    for _ in 1 2 3 4 5; do umount "$t" 2>/dev/null && break; sleep 1; done
    if is_mounted "$t"; then
      warn "$t is busy; detaching it lazily (umount -l)"
      umount -l "$t" || warn "could not unmount $t"
    fi
  done
  rm -f "$MOUNTS_FILE"
  local left; left=$(mounts_under_root)
  [[ -z $left ]] || warn "still mounted under $ROOT (not mounted by this script?):"$'\n'"$left"
}

# --- running things inside the chroot --------------------------------------------------------

# A clean environment: the host's PATH, virtualenv and pip settings (find-links to x86 wheels)
# mean nothing inside; proxies do.
chroot_env() {
  local v env=(PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
               HOME=/root LANG=C.UTF-8 PYTHONUNBUFFERED=1 QEMU_CPU=cortex-a53
               RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL=minor)
  # EDGESWEEP_BOARD_CACHE: where the board keeps its timing and score cache, a path inside the
  # rootfs (default /root/.cache/edgesweep/board, kept across starts; under /tmp, gone at stop).
  for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY EDGESWEEP_BOARD_CACHE; do
    [[ -n ${!v:-} ]] && env+=("$v=${!v}")
  done
  printf '%s\0' "${env[@]}"
}

in_root() {  # in_root CMD...: run CMD inside the chroot with the clean environment
  local env; mapfile -d '' -t env < <(chroot_env)
  env -i "${env[@]}" chroot "$ROOT" "$@"
}

# The files pip installs from, from git when this is a checkout (what is tracked plus new files
# that are not ignored), else the tree minus the usual generated directories.
project_files() {
  if git -C "$PROJECT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    local f
    while IFS= read -r -d '' f; do [[ -f $PROJECT/$f ]] && printf '%s\0' "$f"; done \
      < <(git -C "$PROJECT" ls-files -z --cached --others --exclude-standard)
  else
    (cd "$PROJECT" && find . \( -name .git -o -name '.venv*' -o -name runs -o -name mlruns -o -name mlartifacts \
      -o -name data -o -name .cache -o -name __pycache__ -o -name '*.egg-info' -o -name build -o -name dist \
      -o -name .pytest_cache -o -name ray_results \) -prune -o -type f ! -name '*.onnx' ! -name '*.tflite' \
      ! -name '*.pt' ! -name '*.db' -print0)
  fi
}

# Replace /opt/edgesweep as a whole, so files deleted here disappear there too. The venv holds an
# editable install pointing at /opt/edgesweep, so this alone updates the board's code.
sync_source() {
  local dest="$ROOT/opt/edgesweep" new="$ROOT/opt/edgesweep.new"
  rm -rf "$new"; mkdir -p "$new"
  project_files | tar -C "$PROJECT" --null -T - -cf - | tar -C "$new" -xf -
  rm -rf "$dest.old"
  [[ -e $dest ]] && mv "$dest" "$dest.old"
  mv "$new" "$dest"
  rm -rf "$dest.old"
  say "synced the project source to /opt/edgesweep ($(find "$dest" -type f | wc -l) files)"
}

# What the venv depends on: the parts of pyproject.toml pip reads ([build-system], [project],
# [tool.setuptools]), so a change to, say, pytest's settings does not rebuild it. Without a
# Python with tomllib on the host, the whole file.
install_hash() {
  local py
  for py in python3 "$PROJECT/.venv/bin/python"; do
    if command -v "$py" >/dev/null && "$py" - "$PROJECT/pyproject.toml" <<'EOF' 2>/dev/null; then return; fi
import hashlib, json, sys, tomllib
d = tomllib.load(open(sys.argv[1], "rb"))
keep = {k: d.get(k) for k in ("build-system", "project")} | {"setuptools": d.get("tool", {}).get("setuptools")}
print(hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest())
EOF
  done
  sha256sum "$PROJECT/pyproject.toml" | cut -d' ' -f1
}

# The venv is rebuilt only when what pip installs from pyproject.toml changed.
install_venv() {
  local want; want=$(install_hash)
  if [[ -f $VENV_STAMP && $(<"$VENV_STAMP") == "$want" && -x $ROOT/opt/venv/bin/python ]]; then
    return
  fi
  local log="$LOG_DIR/pip-install.log" t0=$SECONDS
  say "installing '.[board]' into /opt/venv under emulation (about 3-5 minutes; log $log)"
  rm -f "$VENV_STAMP"
  in_root python3 -m venv --clear /opt/venv >"$log" 2>&1 || die "python3 -m venv failed; see $log"
  # Editable: a later build re-syncs the source files and needs no pip run under emulation.
  in_root /opt/venv/bin/pip install --progress-bar off -e '/opt/edgesweep[board]' >>"$log" 2>&1 ||
    die "pip install '/opt/edgesweep[board]' failed inside the rootfs; see $log"
  in_root /opt/venv/bin/python - <<'EOF' >>"$log" 2>&1 || die "the rootfs venv has torch, which the board must never need; see $log"
import importlib.util, sys
sys.exit(1 if importlib.util.find_spec("torch") else 0)
EOF
  # Import what the board imports, under the same cpuinfo and QEMU_CPU the node runs with.
  local check
  check=$(in_root /opt/venv/bin/python -c 'import platform, ray, onnxruntime, device_actors.actor
print(platform.machine(), "python", platform.python_version(), "ray", ray.__version__, "onnxruntime", onnxruntime.__version__)' 2>>"$log") ||
    die "the board's imports fail inside the rootfs; see $log"
  echo "$want" >"$VENV_STAMP"
  say "venv ready in $((SECONDS - t0)) s: $check"
}

# --- the node --------------------------------------------------------------------------------

proc_starttime() {  # field 22 of /proc/PID/stat, counted after the command name in parentheses
  local stat; stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  awk '{print $20}' <<<"$stat"
}

# The recorded node, if its pid is alive and still the process we started (not a reused pid).
node_alive() {
  [[ -f $PID_FILE ]] || return 1
  local pid pgid start rest
  read -r pid pgid start rest <"$PID_FILE"
  [[ -n ${pid:-} && $(proc_starttime "$pid" 2>/dev/null) == "$start" ]]
}

# Every process whose root directory is this rootfs: the node and everything Ray spawned from it,
# whatever process group or session Ray gave them. Nothing else on the host runs in this chroot.
chroot_pids() {
  local root p
  [[ -d $ROOT ]] || return 0
  root=$(readlink -f "$ROOT")
  [[ -n $root && $root != / ]] || die "refusing to look for processes in the chroot $ROOT"
  for p in /proc/[0-9]*; do
    [[ $(readlink "$p/root" 2>/dev/null) == "$root" ]] && echo "${p#/proc/}"
  done
  return 0
}

resolve_token() {  # prints the token's source; the token itself goes into the rootfs only
  local file=$1
  rm -f "$ROOT$TOKEN_IN_ROOT"  # never a token left from an earlier start
  if [[ -n $file ]]; then
    [[ -f $file ]] || die "--token-file $file does not exist"
    install -m 600 -D "$file" "$ROOT$TOKEN_IN_ROOT"; echo "--token-file $file"
  elif [[ -n ${RAY_AUTH_TOKEN:-} ]]; then
    (umask 077; mkdir -p "$ROOT$(dirname "$TOKEN_IN_ROOT")"; printf '%s\n' "$RAY_AUTH_TOKEN" >"$ROOT$TOKEN_IN_ROOT")
    echo "\$RAY_AUTH_TOKEN"
  elif [[ -f $HOME/.ray/auth_token ]]; then
    install -m 600 -D "$HOME/.ray/auth_token" "$ROOT$TOKEN_IN_ROOT"
    # shellcheck disable=SC2088 # the name of the source, not a path
    echo '~/.ray/auth_token'
  fi
  return 0
}

# Ray's logs live on the chroot's tmpfs /tmp, gone at unmount: keep the last session's.
save_ray_logs() {
  local s; s=$(ls -dt "$ROOT"/tmp/*/session_2* 2>/dev/null | head -1 || true)  # --temp-dir may move it
  [[ -n $s && -d $s/logs ]] || return 0
  rm -rf "$LOG_DIR/ray-$(basename "$s")"
  cp -r "$s/logs" "$LOG_DIR/ray-$(basename "$s")" 2>/dev/null || true
  # keep three; `|| true`: with pipefail an ls that matches nothing (a first run) would end the script
  ls -d "$LOG_DIR"/ray-session_* 2>/dev/null | head -n -3 | xargs -r rm -rf || true
  say "kept the node's Ray logs in $LOG_DIR/ray-$(basename "$s")"
}

# SIGTERM to the group (`board join` forwards it to `ray start --block`, which stops its Ray
# processes), SIGKILL after a grace period, then whatever still runs inside the chroot.
stop_node() {
  local grace=${1:-30} pid pgid start rest left i
  if node_alive; then
    read -r pid pgid start rest <"$PID_FILE"
    say "stopping the board node (pid $pid, process group $pgid)"
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for ((i = 0; i < grace; i++)); do
      ! node_alive && [[ -z $(chroot_pids) ]] && break
      sleep 1
    done
    kill -KILL -- "-$pgid" 2>/dev/null || true
  fi
  left=$(chroot_pids)
  if [[ -n $left ]]; then
    say "ending the processes left in the chroot: $(echo $left)"
    kill -TERM $left 2>/dev/null || true
    for ((i = 0; i < 10; i++)); do [[ -z $(chroot_pids) ]] && break; sleep 1; done
    left=$(chroot_pids)
    [[ -n $left ]] && kill -KILL $left 2>/dev/null || true
    for ((i = 0; i < 10; i++)); do [[ -z $(chroot_pids) ]] && break; sleep 1; done
  fi
  left=$(chroot_pids)
  [[ -z $left ]] || warn "processes still run in the chroot: $(echo $left)"
  rm -f "$PID_FILE"
}

# Everything `start` set up, undone: the processes, the token copy, the mounts (Ray's logs kept).
teardown() {
  stop_node "$1"
  save_ray_logs
  rm -f "$ROOT$TOKEN_IN_ROOT"
  unmount_all
}

# --- commands ----------------------------------------------------------------------------------

cmd_build() {
  need_root build; take_lock
  local t0=$SECONDS
  local full=0; [[ -f $ROOTFS_STAMP && -x $ROOT/usr/bin/python3 ]] || full=1
  if ((full)) || [[ ! -f $VENV_STAMP ]]; then ensure_host_tools; fi
  ensure_binfmt
  build_rootfs
  copy_host_files
  sync_source
  local want; want=$(install_hash)
  if [[ -f $VENV_STAMP && $(<"$VENV_STAMP") == "$want" ]]; then
    say "venv up to date (what pip reads from pyproject.toml is unchanged)"
  elif node_alive; then
    die "pyproject.toml changed: stop the node first ($0 stop), then build again"
  else
    mount_all
    trap 'unmount_all' EXIT
    install_venv
    unmount_all; trap - EXIT
  fi
  node_alive && say "the node runs the old code until you restart it ($0 stop; $0 start ...)"
  say "build done in $((SECONDS - t0)) s; rootfs $ROOT"
}

cmd_start() {
  local address="" name="imx8mp-qemu" token_file="" node_ip="" timeout=300
  while (($#)); do
    case $1 in
      --address) address=${2:?--address needs HOST:PORT}; shift 2 ;;
      --name) name=${2:?--name needs a value}; shift 2 ;;
      --token-file) token_file=$(readlink -f "${2:?--token-file needs a path}"); shift 2 ;;
      --node-ip-address) node_ip=${2:?--node-ip-address needs an address}; shift 2 ;;
      --timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) die "start: unknown option $1 (see $0 --help)" ;;
    esac
  done
  [[ -n $address ]] || die "start needs --address HOST:PORT (the head's GCS address)"
  [[ $address == *:* ]] || die "--address $address is not HOST:PORT"
  [[ $timeout =~ ^[0-9]+$ ]] || die "--timeout must be whole seconds"
  need_root start; take_lock
  [[ -f $ROOTFS_STAMP && -f $VENV_STAMP ]] || die "no rootfs yet: run $0 build first"
  if node_alive; then
    local pid pgid start old_address old_name rest
    read -r pid pgid start old_address old_name rest <"$PID_FILE"
    say "already running: board $old_name joined to $old_address (pid $pid); $0 stop to end it"
    return 0
  fi
  [[ -z $(chroot_pids) ]] || die "processes run in the chroot but not the recorded node: $0 stop first"

  local t0; t0=$(date +%s%3N)
  ensure_binfmt
  copy_host_files
  local source; source=$(resolve_token "$token_file")

  local argv=(/opt/venv/bin/python -m orchestrator board join --address "$address" --name "$name" --block)
  [[ -n $node_ip ]] && argv+=(--node-ip-address "$node_ip")
  local env; mapfile -d '' -t env < <(chroot_env)
  env+=("EDGESWEEP_EMULATION=$EMULATION")
  if [[ -n $source ]]; then
    argv+=(--token-file "$TOKEN_IN_ROOT"); env+=(RAY_AUTH_MODE=token)
    say "auth token from $source, copied to $TOKEN_IN_ROOT in the rootfs (mode 600)"
  else
    warn "no auth token (--token-file, \$RAY_AUTH_TOKEN, ~/.ray/auth_token): joining without one"
  fi

  ls -t "$LOG_DIR"/join-*.log 2>/dev/null | tail -n +20 | xargs -r rm -f || true  # keep the last few (none: first start)
  local deadline=$((SECONDS + timeout)) attempt rc log
  for attempt in 1 2 3; do
    mount_all
    log="$LOG_DIR/join-$(date +%Y%m%d-%H%M%S).log"
    ln -sfn "$(basename "$log")" "$LOG_DIR/join.log"
    say "starting board $name -> $address under $EMULATION; log $log"
    launch_node "$log" "$address" "$name" "${env[@]}" -- "${argv[@]}"
    rc=0; wait_node_up "$log" "$deadline" || rc=$?
    ((rc == 0)) && break
    if ((rc == 2 && attempt < 3)); then
      # Ray's raylet waits a fixed 15 s for its dashboard agent to report its ports; under
      # emulation on a busy host the agent's imports can take longer. A new try usually wins.
      warn "Ray's raylet gave up waiting for its agent (slow start under emulation); trying again"
      teardown 3 >/dev/null; resolve_token "$token_file" >/dev/null
      continue
    fi
    tail -n 12 "$log" >&2 || true
    teardown 10
    case $rc in
      3) die "the board node was not up within $timeout s (stopped it); log: $log (more time: --timeout)" ;;
      *) die "the board node exited before it was up; full log: $log" ;;
    esac
  done
  local pid pgid; read -r pid pgid _ <"$PID_FILE"
  local ms=$(($(date +%s%3N) - t0))
  say "board $name is up after $((ms / 1000)).$((ms % 1000 / 100)) s (pid $pid, process group $pgid)"
  say "check it: python -m orchestrator board status --address $address"
}

# launch_node LOG ADDRESS NAME ENV... -- ARGV...: the node in the background, recorded in PID_FILE.
launch_node() {
  local log=$1 address=$2 name=$3 env=() ; shift 3
  while [[ $1 != -- ]]; do env+=("$1"); shift; done; shift
  # setsid: its own session and process group, so stop can signal all of it; 9>&- so the node
  # does not hold this script's lock.
  setsid nohup env -i "${env[@]}" chroot "$ROOT" "$@" >"$log" 2>&1 </dev/null 9>&- &
  local pid=$!
  disown "$pid"  # ours to stop by pid, not this shell's job to report
  local start; start=$(proc_starttime "$pid") || die "the node exited at once; see $log ($0 stop cleans up)"
  local pgid; pgid=$(ps -o pgid= -p "$pid" | tr -d ' ')
  echo "$pid $pgid $start $address $name $log" >"$PID_FILE"
}

# 0: up (`ray start` prints this once the node is registered with the head); 1: the node
# exited; 2: its raylet aborted waiting for its agent (worth another try); 3: past the deadline.
wait_node_up() {
  local log=$1 deadline=$2
  until grep -q "Ray runtime started" "$log" 2>/dev/null; do
    if grep -qs "Timed out waiting for file" "$ROOT"/tmp/*/session_2*/logs/raylet.out ||
       grep -q "node timed out during startup" "$log"; then
      return 2
    fi
    node_alive || return 1
    ((SECONDS < deadline)) || return 3
    sleep 1
  done
}

cmd_stop() {
  need_root stop; take_lock
  if [[ ! -f $PID_FILE && -z $(chroot_pids) && ! -s $MOUNTS_FILE ]]; then
    say "nothing runs"
    return 0
  fi
  teardown 30
  [[ -z $(chroot_pids) && -z $(mounts_under_root) ]] || die "could not end everything: $0 status"
  say "stopped; nothing of the board node runs, nothing is mounted under $ROOT"
}

cmd_status() {
  say "cache:   $CACHE"
  if [[ -f $ROOTFS_STAMP ]]; then
    say "rootfs:  $ROOT (built $(<"$ROOTFS_STAMP"), $(grep -m1 PRETTY_NAME "$ROOT/etc/os-release" | cut -d'"' -f2))"
  elif [[ -e $ROOT ]]; then
    say "rootfs:  $ROOT is unfinished: $0 build"
  else
    say "rootfs:  none: $0 build"
  fi
  if [[ -f $VENV_STAMP ]]; then
    local want; want=$(install_hash)
    [[ $(<"$VENV_STAMP") == "$want" ]] && say "venv:    /opt/venv, installed from the current pyproject.toml" ||
      say "venv:    /opt/venv, stale (pyproject.toml's dependencies changed): $0 build"
  fi
  if node_alive; then
    local pid pgid start address name log
    read -r pid pgid start address name log <"$PID_FILE"
    say "node:    running: board $name -> $address, pid $pid, process group $pgid, $(chroot_pids | wc -l) processes in the chroot"
    say "log:     $log"
  else
    local left; left=$(chroot_pids)
    [[ -n $left ]] && say "node:    not recorded, but processes run in the chroot: $(echo $left) ($0 stop)" ||
      say "node:    not running"
    [[ -e $LOG_DIR/join.log ]] && say "log:     $(readlink -f "$LOG_DIR/join.log") (last start)"
  fi
  local mounts; mounts=$(mounts_under_root)
  [[ -n $mounts ]] && say "mounts:  $(echo $mounts)" || say "mounts:  none"
  [[ -d $CACHE ]] && say "disk:    $(du -sh -x "$CACHE" 2>/dev/null | cut -f1) in $CACHE"
  return 0
}

main() {
  local cmd=${1:-}; (($#)) && shift
  case $cmd in
    build) cmd_build "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    -h|--help|help) usage ;;
    "") usage >&2; exit 2 ;;
    *) usage >&2; die "unknown command: $cmd" ;;
  esac
}

main "$@"
