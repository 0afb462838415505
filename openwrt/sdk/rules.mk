# Stand-in of the OpenWrt SDK's rules.mk, for `make openwrt-test` only: the
# variables a package Makefile uses, set for a Debian cross compiler and a
# staging dir that openwrt/test.sh lays out from Debian's packages of the
# target (tools/cross/sysroot.sh). Not a part of the package.
#
# Given on the command line: TOPDIR (this folder), WORK (build/openwrt/ARCH),
# TRIPLET (mipsel-linux-gnu, ...), ARCH_PACKAGES (mipsel_24kc, ...).

INCLUDE_DIR:=$(TOPDIR)/include
BUILD_DIR:=$(WORK)/build_dir
STAGING_DIR:=$(WORK)/staging_dir/target
STAGING_DIR_HOSTPKG:=$(WORK)/staging_dir/hostpkg
DL_DIR:=$(WORK)/dl
BIN_DIR:=$(WORK)/bin/packages/$(ARCH_PACKAGES)

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
