# Stand-in of the OpenWrt SDK's include/package.mk, for `make openwrt-test`
# only. It does what the SDK does with a package Makefile, in the same order
# and with the same variables, just less of it:
#   - $(eval $(call BuildPackage,P)) reads define Package/P (TITLE, DEPENDS,
#     VARIANT, DEFAULT_VARIANT, SECTION...) and Package/P/conffiles;
#   - `make compile` builds each VARIANT in its own build dir
#     ($(BUILD_DIR)/$(PKG_NAME)-$(VARIANT)/$(PKG_NAME)-$(PKG_VERSION)):
#     unpacks $(DL_DIR)/$(PKG_SOURCE) (checking PKG_HASH unless "skip"),
#     runs Build/Prepare, Build/Configure and Build/Compile, then
#     Package/P/install into an ipkg dir, strips its shared objects, and packs P_VERSION-RELEASE_ARCH.ipk
#     (debian-binary, control.tar.gz, data.tar.gz, as opkg reads them) into
#     $(BIN_DIR);
#   - `make install ROOTFS=DIR PACKAGES="P..."` installs ipks into DIR as
#     opkg would (data unpacked, conffiles listed, /usr/lib/opkg/info/P.*).
# Package dependencies are written into the control files, not resolved.

# As the SDK's package.mk: with CONFIG_USE_MIPS16, code is MIPS16 unless
# the package says no-mips16 in PKG_BUILD_FLAGS (set before this include).
ifdef CONFIG_USE_MIPS16
  ifeq ($(filter no-mips16,$(PKG_BUILD_FLAGS)),)
    TARGET_CFLAGS+=-mips16 -minterlink-mips16
  endif
endif

PKG_BUILD_DIR?=$(BUILD_DIR)/$(PKG_NAME)$(if $(BUILD_VARIANT),-$(BUILD_VARIANT))/$(PKG_NAME)-$(PKG_VERSION)
PKG_INSTALL_DIR?=$(PKG_BUILD_DIR)/ipkg-install
MAKE_FLAGS?=

OWRT_FIELDS:=SECTION CATEGORY SUBMENU TITLE URL DEPENDS VARIANT DEFAULT_VARIANT PROVIDES PKGARCH
OWRT_PACKAGES:=

# BuildPackage P: read Package/P into OWRT.P.FIELD, remember P.
define BuildPackage
$(foreach f,$(OWRT_FIELDS),$(eval $(f):=))
$(eval $(Package/$(1)))
$(foreach f,$(OWRT_FIELDS),$(eval OWRT.$(1).$(f):=$(strip $($(f)))))
$(eval OWRT_PACKAGES+=$(1))
endef

define Build/Prepare/Default
	rm -rf $(PKG_BUILD_DIR)
	mkdir -p $(PKG_BUILD_DIR)
	$(if $(filter-out skip,$(PKG_HASH)),echo "$(PKG_HASH)  $(DL_DIR)/$(PKG_SOURCE)" | sha256sum -c -)
	$(TAR) -C $(PKG_BUILD_DIR) --strip-components=1 -xzf $(DL_DIR)/$(PKG_SOURCE)
endef
Build/Prepare?=$(Build/Prepare/Default)
Build/Configure?=
define Build/Compile/Default
	$(MAKE) -C $(PKG_BUILD_DIR) CC="$(TARGET_CC)" CFLAGS="$(TARGET_CFLAGS)" LDFLAGS="$(TARGET_LDFLAGS)" $(MAKE_FLAGS)
endef
Build/Compile?=$(Build/Compile/Default)

owrt_variants=$(sort $(foreach p,$(OWRT_PACKAGES),$(OWRT.$(p).VARIANT)))
owrt_arch=$(or $(OWRT.$(1).PKGARCH),$(ARCH_PACKAGES))
owrt_ipk=$(BIN_DIR)/$(1)_$(PKG_VERSION)-r$(PKG_RELEASE)_$(call owrt_arch,$(1)).ipk
# DEPENDS as opkg's Depends: "+libcurl +ca-bundle" -> "libcurl, ca-bundle"
owrt_depends=$(subst $(eval) ,$(strip ,) ,$(patsubst +%,%,$(filter +%,$(OWRT.$(1).DEPENDS))))
comma:=,

# ipk P: pack $(PKG_BUILD_DIR)/ipkg-P as an opkg package.
define owrt_ipk_rules
	rm -rf $(PKG_BUILD_DIR)/ipkg-$(1) && mkdir -p $(PKG_BUILD_DIR)/ipkg-$(1)/CONTROL $(BIN_DIR)
	$(call Package/$(1)/install,$(PKG_BUILD_DIR)/ipkg-$(1))
	find $(PKG_BUILD_DIR)/ipkg-$(1) -name '*.so' -exec $(STRIP) {} +
	printf '%s\n' "Package: $(1)" "Version: $(PKG_VERSION)-r$(PKG_RELEASE)" \
		"Depends: $(subst $(eval) ,$(comma) ,$(patsubst +%,%,$(filter +%,$(OWRT.$(1).DEPENDS))))" \
		"License: $(PKG_LICENSE)" "Section: $(OWRT.$(1).SECTION)" "Architecture: $(call owrt_arch,$(1))" \
		"Installed-Size: $$(du -sb --exclude=CONTROL $(PKG_BUILD_DIR)/ipkg-$(1) | cut -f1)" \
		"Description: $(OWRT.$(1).TITLE)" >$(PKG_BUILD_DIR)/ipkg-$(1)/CONTROL/control
	for f in $(strip $(Package/$(1)/conffiles)); do echo $$f; done >$(PKG_BUILD_DIR)/ipkg-$(1)/CONTROL/conffiles
	[ -s $(PKG_BUILD_DIR)/ipkg-$(1)/CONTROL/conffiles ] || rm -f $(PKG_BUILD_DIR)/ipkg-$(1)/CONTROL/conffiles
	cd $(PKG_BUILD_DIR)/ipkg-$(1) && $(TAR) --owner=0 --group=0 --numeric-owner --sort=name --mtime=@0 \
		--exclude=./CONTROL -czf ../data.tar.gz . && \
		$(TAR) -C CONTROL --owner=0 --group=0 --numeric-owner --sort=name --mtime=@0 -czf ../control.tar.gz . && \
		echo 2.0 >../debian-binary && \
		cd .. && $(TAR) --owner=0 --group=0 --numeric-owner --mtime=@0 -czf $(call owrt_ipk,$(1)) \
			./debian-binary ./data.tar.gz ./control.tar.gz
	@echo "package.mk: $(notdir $(call owrt_ipk,$(1))) ($$(wc -c <$(call owrt_ipk,$(1))) bytes)"

endef

.PHONY: compile install
ifeq ($(BUILD_VARIANT),)
compile:
	$(foreach v,$(owrt_variants),$(MAKE) -f $(firstword $(MAKEFILE_LIST)) compile BUILD_VARIANT=$(v) &&) true
else
compile:
	$(Build/Prepare)
	$(Build/Configure)
	$(Build/Compile)
	$(foreach p,$(OWRT_PACKAGES),$(if $(filter $(BUILD_VARIANT),$(OWRT.$(p).VARIANT)),$(call owrt_ipk_rules,$(p))))
endif

install:
	@[ -n "$(ROOTFS)" ] || { echo "package.mk: make install ROOTFS=DIR PACKAGES='P ...'" >&2; exit 1; }
	mkdir -p $(ROOTFS)/usr/lib/opkg/info
	$(foreach p,$(or $(PACKAGES),$(OWRT_PACKAGES)),\
		rm -rf $(WORK)/ipk-$(p) && mkdir -p $(WORK)/ipk-$(p) && \
		$(TAR) -C $(WORK)/ipk-$(p) -xzf $(call owrt_ipk,$(p)) && \
		$(TAR) -C $(ROOTFS) -xzf $(WORK)/ipk-$(p)/data.tar.gz && \
		$(TAR) -tzf $(WORK)/ipk-$(p)/data.tar.gz | sed -n 's|^\./\(.*[^/]\)$$|/\1|p' >$(ROOTFS)/usr/lib/opkg/info/$(p).list && \
		$(TAR) -C $(ROOTFS)/usr/lib/opkg/info -xzf $(WORK)/ipk-$(p)/control.tar.gz ./control && \
		mv $(ROOTFS)/usr/lib/opkg/info/control $(ROOTFS)/usr/lib/opkg/info/$(p).control && \
		{ $(TAR) -C $(ROOTFS)/usr/lib/opkg/info -xzf $(WORK)/ipk-$(p)/control.tar.gz ./conffiles 2>/dev/null && \
		  mv $(ROOTFS)/usr/lib/opkg/info/conffiles $(ROOTFS)/usr/lib/opkg/info/$(p).conffiles || true; } && \
		echo "package.mk: installed $(p) into $(ROOTFS)" &&) true
