# A stand-in for OpenWrt's /lib/functions.sh (config_load, config_get,
# config_get_bool), which rc.common loads on a router, for the specs that run
# the init script: it reads, from $UCI_CONFIG_DIR, just the `option` lines of
# the one named section, as UCI stores them.
config_load() {
	while read -r kw name value; do
		[ "$kw" = option ] || continue
		value=${value#\'}
		value=${value%\'}
		eval "CONFIG_main_$name=\$value"
	done <"$UCI_CONFIG_DIR/$1"
}
config_get() {
	eval "__value=\${CONFIG_$2_$3-}"
	[ -n "$__value" ] || __value=$4
	eval "$1=\$__value"
}
config_get_bool() {
	config_get "$1" "$2" "$3" "$4"
	eval "case \$$1 in 1|on|true|yes|enabled) $1=1 ;; *) $1=0 ;; esac"
}
