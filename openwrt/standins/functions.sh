# shellcheck shell=ash
# A stand-in for OpenWrt's /lib/functions.sh, for the specs that run the
# package's shell scripts in a temporary root (IPKG_INSTROOT): the part they
# use, written from its documented behaviour. config_load reads a package
# through `uci export` (the uci stand-in), whose output is shell code that
# calls config, option and list below; config_get reads an option (a list's
# items joined by spaces), config_get_bool a boolean.

config_load() {
	local name
	for name in $_standin_config_vars; do
		unset "$name"
	done
	_standin_config_vars=''
	_standin_section=''
	eval "$(uci -q export "$1")"
}

package() {
	return 0
}

# config TYPE [NAME]
config() {
	_standin_section=${2:-$1}
	_standin_config_set "CONFIG_${_standin_section}_TYPE" "$1"
}

# option NAME VALUE
option() {
	_standin_config_set "CONFIG_${_standin_section}_$1" "$2"
}

# list NAME VALUE
list() {
	local var="CONFIG_${_standin_section}_$1"
	eval "_standin_config_set \"\$var\" \"\${$var:+\$$var }\$2\""
}

_standin_config_set() {
	eval "$1=\$2"
	_standin_config_vars="$_standin_config_vars $1"
}

# config_get VARIABLE SECTION OPTION [DEFAULT], or config_get SECTION OPTION
# (prints it)
config_get() {
	if [ -z "$3" ]; then
		eval "echo \"\${CONFIG_$1_$2:-}\""
	else
		eval "$1=\${CONFIG_$2_$3:-\$4}"
	fi
}

# config_get_bool VARIABLE SECTION OPTION [DEFAULT]: 1 or 0
config_get_bool() {
	local value
	config_get value "$2" "$3" "$4"
	case "$value" in
	1 | on | true | yes | enabled) value=1 ;;
	0 | off | false | no | disabled) value=0 ;;
	*) value=${4:-0} ;;
	esac
	eval "$1=\$value"
}
