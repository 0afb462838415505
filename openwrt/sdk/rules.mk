# Stand-in of the OpenWrt SDK's rules.mk, for `make openwrt-test` and
# spec/openwrt_feed_spec.lua only: the variables a package Makefile uses,
# set for a Debian cross compiler and a staging dir that openwrt/test.sh
# lays out from Debian's packages of the target (tools/cross/sysroot.sh).
# Not a part of the package.
#
# TOPDIR is the stand-in SDK that openwrt/sdk/setup.sh laid out; its
# target.mk gives TRIPLET (mipsel-linux-gnu, ...) and ARCH_PACKAGES
# (mipsel_24kc, ...).

include $(TOPDIR)/target.mk

empty:=
space:=$(empty) $(empty)
comma:=,

INCLUDE_DIR:=$(TOPDIR)/include
SCRIPT_DIR:=$(TOPDIR)/scripts
BUILD_DIR:=$(TOPDIR)/build_dir/target-$(ARCH_PACKAGES)
STAGING_DIR:=$(TOPDIR)/staging_dir/target-$(ARCH_PACKAGES)
STAGING_DIR_HOSTPKG:=$(TOPDIR)/staging_dir/hostpkg
DL_DIR:=$(TOPDIR)/dl
TMP_DIR:=$(TOPDIR)/tmp
# bin/packages/ARCH/FEED, FEED given by the top-level Makefile (base for package/)
BIN_DIR:=$(TOPDIR)/bin/packages/$(ARCH_PACKAGES)/$(or $(FEED),base)

TARGET_CC:=$(TRIPLET)-gcc
STRIP:=$(TRIPLET)-strip --strip-unneeded
TARGET_CFLAGS:=-Os -pipe -fno-caller-saves
TARGET_CPPFLAGS:=-I$(STAGING_DIR)/usr/include
TARGET_LDFLAGS:=-L$(STAGING_DIR)/usr/lib -Wl,-rpath-link,$(STAGING_DIR)/usr/lib
FPIC:=-fPIC
# OpenWrt's 24Kc targets (ath79, ramips) have MIPS16e, and CONFIG_USE_MIPS16
# defaults to y there: package.mk then builds packages as MIPS16.
CONFIG_USE_MIPS16:=$(if $(filter mipsel_24kc,$(ARCH_PACKAGES)),y)

INSTALL_DIR:=install -d -m0755
INSTALL_BIN:=install -m0755
INSTALL_DATA:=install -m0644
INSTALL_CONF:=install -m0600
CP:=cp -fpR
TAR:=tar
