# Stand-in of the OpenWrt SDK's top-level Makefile (openwrt/sdk/setup.sh
# links it as the SDK's Makefile), for `make openwrt-test` only. The
# commands of docs/openwrt.md, in the SDK's folder:
#   make defconfig                 (every package is selected here)
#   make package/NAME/compile      builds the package folder NAME (package/NAME or
#                                  package/feeds/FEED/NAME) with include/package.mk;
#                                  the packages land in bin/packages/ARCH/FEED
# and, for the tests:
#   make package/NAME/dump         its metadata and recipes (include/package.mk)
#   make package/NAME/install ROOTFS=DIR PACKAGES='P ...'   installs packages as opkg would

TOPDIR:=$(CURDIR)
export TOPDIR

.PHONY: defconfig FORCE

defconfig:
	@echo "stand-in SDK: every package is selected (as CONFIG_ALL)"

# package/NAME/ACTION
package/%: FORCE
	@name=$(word 1,$(subst /, ,$*)); action=$(word 2,$(subst /, ,$*)); \
	dir=$$(for d in package/$$name package/feeds/*/$$name; do [ -f $$d/Makefile ] && echo $$d && break; done); \
	[ -n "$$dir" ] || { echo "stand-in SDK: no package folder $$name in package/ or package/feeds/*/" >&2; exit 1; }; \
	case $$dir in package/feeds/*) feed=$$(echo $$dir | cut -d/ -f3) ;; *) feed=base ;; esac; \
	$(MAKE) --no-print-directory -C $$dir TOPDIR=$(TOPDIR) FEED=$$feed $$action
