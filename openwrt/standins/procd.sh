# shellcheck shell=ash
# A stand-in for OpenWrt's /lib/functions/procd.sh, for the specs that run
# the package's init script in a temporary root (IPKG_INSTROOT): each call
# is recorded (standin-record procd CALL ARGUMENTS), and the spec's procd
# (spec/support/openwrt_root.lua) acts on them as procd acts on the JSON the
# real functions send it over ubus. As there, closing the service asks the
# init script for its triggers (service_triggers).

_standin_procd() {
	standin-record procd "$@"
}

procd_open_service() { _standin_procd open_service "$@"; }
procd_close_service() {
	_standin_procd open_trigger
	service_triggers
	_standin_procd close_trigger
	_standin_procd close_service "$@"
}
procd_open_instance() { _standin_procd open_instance "$@"; }
procd_set_param() { _standin_procd set_param "$@"; }
procd_append_param() { _standin_procd append_param "$@"; }
procd_close_instance() { _standin_procd close_instance "$@"; }
procd_open_trigger() { _standin_procd open_trigger "$@"; }
procd_close_trigger() { _standin_procd close_trigger "$@"; }
procd_add_reload_trigger() { _standin_procd add_reload_trigger "$@"; }
procd_add_config_trigger() { _standin_procd add_config_trigger "$@"; }
procd_add_interface_trigger() { _standin_procd add_interface_trigger "$@"; }
procd_add_reload_interface_trigger() { _standin_procd add_reload_interface_trigger "$@"; }
procd_kill() { _standin_procd kill "$@"; }
procd_send_signal() { _standin_procd send_signal "$@"; }
