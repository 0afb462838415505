# shellcheck shell=ash disable=SC3043,SC2154 # ash has local; config_get sets the settings
# /usr/lib/dps/dps.sh: provisioning this device through Azure DPS on OpenWrt,
# the shell side. Sourced (after /lib/functions.sh) by /etc/init.d/dps, by
# its procd instance /usr/lib/dps/agent, by the NTP hotplug hook and by the
# package's uci-defaults script; defines functions only.
#
# The settings are in /etc/config/dps (UCI), never a key: keys are files,
# passed to `dps` by name. What happens goes to the system log (logger -t
# dps; logread -e dps), never a key either. When a registration is made or
# a certificate issued, the rest of the system is told: `hotplug-call dps`
# with ACTION=provisioned, reprovisioned or cert-renewed and DPS_HUB,
# DPS_DEVICE_ID and DPS_REGISTRATION_ID in the environment, and the ubus
# event dps.ACTION (`ubus call service event`).
#
# The agent's state in this boot is in /var/run/dps (tmpfs): `state`, one
# of running, provisioned, clock (waiting for NTP), retrying, failed (gave
# up until an interface comes up), stopped (needs a person), interface
# (waiting for one); `attempt`; `ntp` once NTP has set the clock.
#
# IPKG_INSTROOT is the root the files are under: empty on a router, a
# temporary root in the tests (as OpenWrt's own scripts use it). DPS_BIN
# names the dps command (it may be a command line) and DPS_DIR replaces
# /etc/dps, for tests.

DPS_BIN=${DPS_BIN:-$IPKG_INSTROOT/usr/bin/dps}
DPS_DIR=${DPS_DIR:-$IPKG_INSTROOT/etc/dps}
DPS_RUN=$IPKG_INSTROOT/var/run/dps
DPS_INIT=$IPKG_INSTROOT/etc/init.d/dps
# shellcheck disable=SC2034 # for /etc/init.d/dps
DPS_CONFIG=$IPKG_INSTROOT/etc/config/dps

# dps_log PRIORITY MESSAGE: one line to the system log (and to stderr when
# dps_tell is set: a command run by hand).
dps_log() {
	logger -t dps -p "daemon.$1" ${dps_tell:+-s} "$2"
}

# Reads /etc/config/dps (section main) into shell variables.
dps_load() {
	config_load dps
	config_get_bool enabled main enabled 0
	config_get id_scope main id_scope
	config_get endpoint main endpoint
	config_get registration_id main registration_id
	config_get registration_id_source main registration_id_source
	config_get registration_id_prefix main registration_id_prefix
	config_get symmetric_key_file main symmetric_key_file
	config_get group_key_file main group_key_file
	config_get cert_file main cert_file
	config_get cert_key_file main cert_key_file
	config_get key_password_file main key_password_file
	config_get ca_file main ca_file
	config_get proxy main proxy
	config_get model_id main model_id
	config_get payload main payload
	config_get timeout main timeout 60
	config_get attempts main attempts 5
	config_get retry_delay main retry_delay 60
	config_get interfaces main interfaces wan
	config_get assignment main assignment "$DPS_DIR/assignment.json"
	config_get issue_cert_dir main issue_cert_dir
}

# dps_bad MESSAGE: a setting that needs a person, logged; returns 1.
dps_bad() {
	dps_log err "$1 (/etc/config/dps); not provisioning until it is fixed"
	return 1
}

# Whether the loaded settings can provision: 0, or 1 after one log line
# that says what is wrong. Resolves registration_id from its source.
dps_check() {
	local option file sources=''

	if [ "$enabled" != 1 ]; then
		dps_log notice "disabled: option enabled is not '1' in /etc/config/dps"
		return 1
	fi
	case "$id_scope" in
	"") dps_bad "option id_scope is not set"; return 1 ;;
	*[!A-Za-z0-9._-]*) dps_bad "option id_scope '$id_scope' is not an ID scope (A-Z a-z 0-9 - . _)"; return 1 ;;
	esac
	[ "${#id_scope}" -le 64 ] || { dps_bad "option id_scope is longer than 64 characters"; return 1; }
	for option in timeout attempts retry_delay; do
		eval "file=\$$option"
		case "$file" in
		"" | *[!0-9]* | 0) dps_bad "option $option '$file' is not a whole number of at least 1"; return 1 ;;
		esac
	done

	# One key source, as files that can be read: a key never goes in UCI.
	for option in symmetric_key_file group_key_file cert_file; do
		eval "file=\$$option"
		[ -n "$file" ] && sources="$sources${sources:+ and }option $option"
	done
	case "$sources" in
	"") dps_bad "no key: set option group_key_file, symmetric_key_file or cert_file"; return 1 ;;
	*" and "*) dps_bad "$sources are set: keep one key source"; return 1 ;;
	esac
	if [ -n "$cert_file" ] && [ -z "$cert_key_file" ]; then
		dps_bad "option cert_file needs option cert_key_file (the certificate's private key)"
		return 1
	fi
	for option in symmetric_key_file group_key_file cert_file cert_key_file key_password_file ca_file; do
		eval "file=\$$option"
		[ -z "$file" ] && continue
		if [ ! -e "$file" ]; then
			dps_bad "option $option: $file does not exist"
			return 1
		elif [ ! -f "$file" ] || [ ! -r "$file" ]; then
			dps_bad "option $option: $file is not a file that can be read"
			return 1
		fi
	done
	dps_registration_id
}

# dps_mac NAME: the MAC address of a network device, or of the device of a
# network interface (netifd's, e.g. wan), as lower-case hex without colons.
dps_mac() {
	local device="$1" mac

	if [ ! -r "$IPKG_INSTROOT/sys/class/net/$device/address" ]; then
		device=$(ubus call "network.interface.$1" status 2>/dev/null | jsonfilter -e '@.device' 2>/dev/null)
		[ -n "$device" ] || return 1
	fi
	read -r mac <"$IPKG_INSTROOT/sys/class/net/$device/address" || return 1
	mac=$(echo "$mac" | tr -d ':' | tr 'A-F' 'a-f')
	case "$mac" in
	"" | *[!0-9a-f]* | 000000000000) return 1 ;;
	esac
	echo "$mac"
}

# The board's serial number, where the device tree or the firmware (DMI)
# exposes one.
dps_board_serial() {
	local file serial

	for file in /proc/device-tree/serial-number /sys/firmware/devicetree/base/serial-number \
		/sys/class/dmi/id/product_serial; do
		[ -r "$IPKG_INSTROOT$file" ] || continue
		serial=$(tr -d '\000' <"$IPKG_INSTROOT$file" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
		[ -n "$serial" ] && { echo "$serial"; return 0; }
	done
	return 1
}

# Sets registration_id from option registration_id, or from
# registration_id_source (mac:INTERFACE, board or hostname) with
# registration_id_prefix before it; with a certificate it may stay empty
# (the certificate's CN is used). 1 after a log line when it cannot.
dps_registration_id() {
	local value source="$registration_id_source"

	if [ -z "$registration_id" ]; then
		case "$source" in
		"")
			[ -n "$cert_file" ] && return 0
			dps_bad "set option registration_id, or registration_id_source (mac:INTERFACE, board or hostname)"
			return 1
			;;
		mac:?*)
			value=$(dps_mac "${source#mac:}") || {
				dps_bad "registration_id_source '$source': ${source#mac:} has no MAC address here"
				return 1
			}
			;;
		board)
			value=$(dps_board_serial) || {
				dps_bad "registration_id_source 'board': this board exposes no serial number"
				return 1
			}
			;;
		hostname)
			read -r value <"$IPKG_INSTROOT/proc/sys/kernel/hostname"
			;;
		*)
			dps_bad "registration_id_source '$source' is not mac:INTERFACE, board or hostname"
			return 1
			;;
		esac
		registration_id="$registration_id_prefix$value"
	fi
	case "$registration_id" in
	"" | *[!A-Za-z0-9._:-]*)
		dps_bad "registration ID '$registration_id'${source:+ (from $source)} may only have A-Z a-z 0-9 - . _ :"
		return 1
		;;
	esac
	[ "${#registration_id}" -le 128 ] || { dps_bad "registration ID is longer than 128 characters"; return 1; }
}

# Whether one of the interfaces to wait for is up (netifd, over ubus).
dps_interfaces_up() {
	local iface

	for iface in $interfaces; do
		[ "$(ubus call "network.interface.$iface" status 2>/dev/null | jsonfilter -e '@.up' 2>/dev/null)" = true ] &&
			return 0
	done
	return 1
}

# The agent's state in this boot (see the top), or nothing.
dps_state() {
	cat "$DPS_RUN/state" 2>/dev/null
}

dps_set_state() {
	mkdir -p "$DPS_RUN" && echo "$1" >"$DPS_RUN/state"
}

# Whether the clock may still be wrong: NTP has not set it in this boot,
# and the NTP client is on (else no hook will ever say so).
dps_ntp_pending() {
	[ -e "$DPS_RUN/ntp" ] && return 1
	[ "$(uci -q get system.ntp.enabled)" != 0 ]
}

# The NTP hook's part: NTP has set the clock. When the agent waits for that,
# it starts again at once (a restart also forgets the attempts so far).
dps_ntp_synced() {
	[ -e "$DPS_RUN/ntp" ] && return 0
	mkdir -p "$DPS_RUN" && date >"$DPS_RUN/ntp"
	[ "$(dps_state)" = clock ] || return 0
	dps_log notice "NTP has set the clock: provisioning again now"
	dps_service restart
}

# dps_service ACTION: runs /etc/init.d/dps ACTION (as its #! line does).
dps_service() {
	/bin/sh "$IPKG_INSTROOT/etc/rc.common" "$DPS_INIT" "$@"
}

# dps_sum FILE: a checksum of FILE, or nothing when there is none.
dps_sum() {
	[ -f "$1" ] && cksum <"$1"
}

# dps_attempt MODE: one `dps provision` with the loaded settings; MODE
# reprovision registers even when the cache matches (--force). Sets dps_rc
# (dps's exit status), dps_kind and dps_message (a failure's kind and dps's
# line about it), dps_changed (1: the cache was written: a registration at
# the service) and dps_cert_changed (1: a new certificate), and leaves the
# registration state (JSON) in $dps_out.
dps_attempt() {
	local mode="$1" before cert_before line previous='' err="$DPS_RUN/err.$$"

	dps_out="$DPS_RUN/out.$$"
	dps_kind='' dps_message='' dps_changed='' dps_cert_changed='' dps_certificate=''
	# Keys go by file name only, never on the command line.
	set -- provision --id-scope "$id_scope" --timeout "$timeout" --cache "$assignment" --verbose
	[ "$mode" = reprovision ] && set -- "$@" --force
	[ -n "$registration_id" ] && set -- "$@" --registration-id "$registration_id"
	[ -n "$symmetric_key_file" ] && set -- "$@" --symmetric-key-file "$symmetric_key_file"
	[ -n "$group_key_file" ] && set -- "$@" --group-key-file "$group_key_file"
	[ -n "$cert_file" ] && set -- "$@" --cert-file "$cert_file" --key-file "$cert_key_file"
	[ -n "$key_password_file" ] && set -- "$@" --key-password-file "$key_password_file"
	[ -n "$endpoint" ] && set -- "$@" --endpoint "$endpoint"
	[ -n "$ca_file" ] && set -- "$@" --ca-file "$ca_file"
	[ -n "$proxy" ] && set -- "$@" --proxy "$proxy"
	[ -z "$payload" ] && [ -n "$model_id" ] && payload="{\"modelId\":\"$model_id\"}"
	[ -n "$payload" ] && set -- "$@" --payload "$payload"
	if [ -n "$issue_cert_dir" ]; then
		set -- "$@" --issue-cert "$issue_cert_dir"
		mkdir -p "$issue_cert_dir" && chmod 700 "$issue_cert_dir"
	fi
	mkdir -p "$DPS_RUN" "${assignment%/*}"

	before=$(dps_sum "$assignment")
	cert_before=$(dps_sum "$issue_cert_dir/cert.pem")
	# shellcheck disable=SC2086 # DPS_BIN may be a command with arguments
	$DPS_BIN "$@" >"$dps_out" 2>"$err"
	dps_rc=$?
	[ "$(dps_sum "$assignment")" = "$before" ] || dps_changed=1
	[ -z "$issue_cert_dir" ] || [ "$(dps_sum "$issue_cert_dir/cert.pem")" = "$cert_before" ] || dps_cert_changed=1

	# dps's lines (--verbose) never hold a key: a failure's line, then its
	# details (kind=…); notes and warnings are passed on.
	while IFS= read -r line; do
		line=${line#dps: }
		case "$line" in
		kind=*)
			dps_kind=${line#kind=}
			dps_kind=${dps_kind%% *}
			dps_message=$previous
			;;
		note:* | warning:*) dps_log notice "$line" ;;
		"certificate "*) dps_certificate=$line ;;
		esac
		previous=$line
	done <"$err"
	[ "$dps_rc" != 0 ] && [ -z "$dps_message" ] && dps_message=$previous
	rm -f "$err"
	return "$dps_rc"
}

# What a failed attempt calls for: sets dps_class to clock (the clock may
# explain it and NTP has not set it yet: wait), retry (the network or DPS
# may come back) or stop (a person must act).
dps_classify() {
	case "$dps_rc:$dps_kind" in
	*:tls | 4:*)
		if dps_ntp_pending; then
			dps_class=clock
			return
		fi
		;;
	esac
	case "$dps_rc:$dps_kind" in
	5:* | 1:conflict | 1:throttled | 1:service | 1:protocol) dps_class=retry ;;
	*) dps_class=stop ;;
	esac
}

# dps_json TEXT: TEXT inside a JSON string.
dps_json() {
	printf '%s' "$1" | sed -e 's/[\\"]/\\&/g'
}

# dps_notify ACTION HUB DEVICE: tells the system (see the top).
dps_notify() {
	ACTION="$1" DPS_HUB="$2" DPS_DEVICE_ID="$3" DPS_REGISTRATION_ID="$registration_id" hotplug-call dps
	ubus call service event "{\"type\":\"dps.$1\",\"data\":{\"hub\":\"$(dps_json "$2")\",\"device_id\":\"$(dps_json "$3")\",\"registration_id\":\"$(dps_json "$registration_id")\"}}" >/dev/null
}

# dps_succeeded MODE: after a successful attempt, logs it and, when it
# changed something, tells the system: provisioned (reprovisioned for MODE
# reprovision) after a registration, cert-renewed after a new certificate.
dps_succeeded() {
	local hub device action=provisioned

	[ "$1" = reprovision ] && action=reprovisioned
	hub=$(jsonfilter -i "$dps_out" -e '@.assignedHub')
	device=$(jsonfilter -i "$dps_out" -e '@.deviceId')
	rm -f "$dps_out"
	if [ "$1" = reprovision ] || [ "$dps_changed" = 1 ]; then
		dps_log notice "$action: assigned to $hub as device $device; assignment in $assignment"
		dps_notify "$action" "$hub" "$device"
	else
		dps_log info "assigned to $hub as device $device, from $assignment (no request)"
	fi
	if [ "$dps_cert_changed" = 1 ]; then
		dps_log notice "cert-renewed: $dps_certificate, in $issue_cert_dir"
		dps_notify cert-renewed "$hub" "$device"
	fi
}

# dps_once MODE: provisions now, by hand (provision, reprovision or renew
# of /etc/init.d/dps): one attempt, its outcome logged and on stderr.
# Returns dps's exit status.
dps_once() {
	dps_tell=1
	dps_load
	dps_check || return 2
	if dps_attempt "$1"; then
		dps_succeeded "$1"
		return 0
	fi
	rm -f "$dps_out"
	dps_log err "$1 failed: $dps_message (exit status $dps_rc)"
	return "$dps_rc"
}

# dps_idle STATE: the agent's work is done until procd stops it (a restart,
# a reload after a change, the NTP hook): it sleeps, so that procd does not
# respawn it (procd respawns an instance whatever its exit status).
dps_idle() {
	dps_set_state "$1"
	exec sleep 2147483647
}

# The procd instance: provisions, then idles (dps_idle). A failure that the
# network or DPS explains ends it with status 1, and procd starts it again
# after retry_delay seconds (respawn), until `attempts`; one that the clock
# explains waits for the NTP hook, not counted; any other needs a person:
# one log line, then idle.
dps_agent() {
	local attempt

	dps_load
	dps_check || dps_idle stopped
	dps_set_state running
	attempt=$(($(cat "$DPS_RUN/attempt" 2>/dev/null || echo 0) + 1))
	echo "$attempt" >"$DPS_RUN/attempt"
	while :; do
		if dps_attempt provision; then
			dps_succeeded provision
			dps_idle provisioned
		fi
		rm -f "$dps_out"
		dps_classify
		case "$dps_class" in
		clock)
			# the hook reads the state after marking the clock set, this
			# reads the mark after setting the state: one of them sees it
			dps_set_state clock
			if dps_ntp_pending; then
				dps_log notice "waiting for NTP to set the clock, which may explain: $dps_message"
				dps_idle clock
			fi
			;;
		retry)
			if [ "$attempt" -lt "$attempts" ]; then
				dps_set_state retrying
				dps_log warn "attempt $attempt of $attempts failed: $dps_message; next in $retry_delay s"
				exit 1
			fi
			dps_log err "attempt $attempt of $attempts failed: $dps_message; trying again when $interfaces comes up, or on /etc/init.d/dps restart"
			dps_idle failed
			;;
		*)
			dps_log err "provisioning failed: $dps_message (exit status $dps_rc); not retried: fix it, then /etc/init.d/dps restart"
			dps_idle stopped
			;;
		esac
	done
}
