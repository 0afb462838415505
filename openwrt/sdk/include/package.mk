# Stand-in of the OpenWrt SDK's include/package.mk, for `make openwrt-test`
# and spec/openwrt_feed_spec.lua only. It does what the SDK does with a
# package Makefile, in the same order and with the same variables, just less
# of it:
#   - $(eval $(call BuildPackage,P)) reads define Package/P (TITLE, DEPENDS,
#     VARIANT, DEFAULT_VARIANT, PROVIDES, CONFLICTS, PKGARCH, SECTION...) and
#     Package/P/conffiles;
#   - every dependency must name a package: one of the release's feeds
#     (tmp/packageinfo, from openwrt/feeds.lua) or of this Makefile, or what
#     one of these provides (the SDK's scripts/package-metadata.pl warns
#     "has a dependency on 'X', which does not exist" and the package cannot
#     be selected; here the build stops);
#   - `make compile` builds each VARIANT in its own build dir
#     ($(BUILD_DIR)/$(PKG_NAME)-$(VARIANT)/$(PKG_NAME)-$(PKG_VERSION)):
#     with PKG_SOURCE, unpacks $(DL_DIR)/$(PKG_SOURCE) after checking it
#     against PKG_HASH (a SHA-256: the feed takes no "skip"; nothing is
#     downloaded here), then runs Build/Prepare, Build/Configure and
#     Build/Compile, then Package/P/install into an ipkg dir, strips its
#     shared objects, and packs P_VERSION-RELEASE_ARCH.ipk (debian-binary,
#     control.tar.gz, data.tar.gz, as opkg reads them) into $(BIN_DIR);
#   - `make dump` prints the metadata (as the SDK's DUMP=1 does) and, per
#     variant, the Build/Compile and install recipes as they expand;
#   - `make install ROOTFS=DIR PACKAGES="P..."` installs ipks into DIR as
#     opkg would (data unpacked, conffiles listed, /usr/lib/opkg/info/P.*).
# Dependencies are checked and written into the control files, not resolved.

# As the SDK's package.mk: with CONFIG_USE_MIPS16, code is MIPS16 unless
# the package says no-mips16 in PKG_BUILD_FLAGS (set before this include).
ifdef CONFIG_USE_MIPS16
  ifeq ($(filter no-mips16,$(PKG_BUILD_FLAGS)),)
    TARGET_CFLAGS+=-mips16 -minterlink-mips16
  endif
endif

PKG_BUILD_DIR?=$(BUILD_DIR)/$(if $(BUILD_VARIANT),$(PKG_NAME)-$(BUILD_VARIANT)/)$(PKG_NAME)-$(PKG_VERSION)
PKG_INSTALL_DIR?=$(PKG_BUILD_DIR)/ipkg-install

OWRT_FIELDS:=SECTION CATEGORY SUBMENU TITLE URL DEPENDS VARIANT DEFAULT_VARIANT PROVIDES CONFLICTS PKGARCH
OWRT_PACKAGES:=

# BuildPackage P: read Package/P into OWRT.P.FIELD, remember P.
define BuildPackage
$(foreach f,$(OWRT_FIELDS),$(eval $(f):=))
$(eval $(Package/$(1)))
$(foreach f,$(OWRT_FIELDS),$(eval OWRT.$(1).$(f):=$(strip $($(f)))))
$(eval OWRT_PACKAGES+=$(1))
endef

# The dependency names of P: "+COND:name", "+name", "name" (not "@COND").
owrt_dep_names=$(foreach d,$(filter-out @%,$(OWRT.$(1).DEPENDS)),$(lastword $(subst :, ,$(patsubst +%,%,$(d)))))
owrt_known=$(sort $(shell cat $(TMP_DIR)/packageinfo 2>/dev/null) $(OWRT_PACKAGES) \
	$(foreach p,$(OWRT_PACKAGES),$(OWRT.$(p).PROVIDES)))
# "P:X" for every dependency X of P that names no package
owrt_unknown=$(strip $(foreach p,$(OWRT_PACKAGES),$(foreach d,$(call owrt_dep_names,$(p)),$(if $(filter $(d),$(owrt_known)),,$(p):$(d)))))
define owrt_check_depends
$(if $(owrt_unknown),$(foreach u,$(owrt_unknown),$(info WARNING: Makefile '$(CURDIR)/Makefile' has a dependency on \
	'$(lastword $(subst :, ,$(u)))', which does not exist (package $(firstword $(subst :, ,$(u))))))\
	$(error package.mk: dependencies that no package of the feeds (tmp/packageinfo) or of this Makefile provides))
endef

define Build/Prepare/Default
	rm -rf $(PKG_BUILD_DIR)
	mkdir -p $(PKG_BUILD_DIR)
	@[ -f "$(DL_DIR)/$(PKG_SOURCE)" ] || { echo "package.mk: $(DL_DIR)/$(PKG_SOURCE) is missing (this stand-in downloads nothing)" >&2; exit 1; }
	@echo "$(PKG_HASH)" | grep -qE '^[0-9a-f]{64}$$' || { echo "package.mk: PKG_HASH '$(PKG_HASH)' is no SHA-256" >&2; exit 1; }
	echo "$(PKG_HASH)  $(DL_DIR)/$(PKG_SOURCE)" | sha256sum -c -
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
define owrt_nl


endef
# a list as opkg's control writes it: "libcurl, ca-bundle"
owrt_list=$(subst $(space),$(comma)$(space),$(strip $(1)))

# ipk P: pack $(PKG_BUILD_DIR)/ipkg-P as an opkg package.
define owrt_ipk_rules
	rm -rf $(PKG_BUILD_DIR)/ipkg-$(1) && mkdir -p $(PKG_BUILD_DIR)/ipkg-$(1)/CONTROL $(BIN_DIR)
	$(call Package/$(1)/install,$(PKG_BUILD_DIR)/ipkg-$(1))
	find $(PKG_BUILD_DIR)/ipkg-$(1) -name '*.so' -exec $(STRIP) {} +
	printf '%s\n' "Package: $(1)" "Version: $(PKG_VERSION)-r$(PKG_RELEASE)" \
		"Depends: $(call owrt_list,$(call owrt_dep_names,$(1)))" \
		$(if $(OWRT.$(1).PROVIDES),"Provides: $(call owrt_list,$(OWRT.$(1).PROVIDES))") \
		$(if $(OWRT.$(1).CONFLICTS),"Conflicts: $(call owrt_list,$(OWRT.$(1).CONFLICTS))") \
		"License: $(PKG_LICENSE)" "Section: $(OWRT.$(1).SECTION)" "Architecture: $(call owrt_arch,$(1))" \
		"Maintainer: $(PKG_MAINTAINER)" \
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

# dump_package P: P's metadata, as the SDK's DUMP=1 writes it.
define owrt_dump_package
$(info Package: $(1))
$(foreach f,VARIANT DEFAULT_VARIANT DEPENDS PROVIDES CONFLICTS PKGARCH SECTION CATEGORY TITLE,\
	$(if $(OWRT.$(1).$(f)),$(info $(f): $(OWRT.$(1).$(f)))))
$(info Maintainer: $(PKG_MAINTAINER))
$(info @@)
endef

.PHONY: compile install dump
ifeq ($(BUILD_VARIANT),)
compile:
	$(owrt_check_depends)
	$(foreach v,$(owrt_variants),$(MAKE) -f $(firstword $(MAKEFILE_LIST)) compile BUILD_VARIANT=$(v) &&) true

dump:
	$(owrt_check_depends)
	$(info Source: $(PKG_SOURCE))
	$(info Hash: $(PKG_HASH))
	$(info Version: $(PKG_VERSION)-r$(PKG_RELEASE))
	$(info @@)
	$(foreach p,$(OWRT_PACKAGES),$(call owrt_dump_package,$(p)))
	@$(foreach v,$(owrt_variants),$(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) dump BUILD_VARIANT=$(v) &&) true
else
compile:
	$(Build/Prepare)
	$(Build/Configure)
	$(Build/Compile)
	$(foreach p,$(OWRT_PACKAGES),$(if $(filter $(BUILD_VARIANT),$(OWRT.$(p).VARIANT)),$(call owrt_ipk_rules,$(p))))

# The variant's recipes, expanded, each on one line; the install recipes into the root "/".
owrt_one_line=$(strip $(subst $(owrt_nl),; ,$(subst \$(owrt_nl), ,$(1))))
dump:
	$(info Build-Variant: $(BUILD_VARIANT))
	$(info Build/Compile: $(call owrt_one_line,$(Build/Compile)))
	$(foreach p,$(OWRT_PACKAGES),$(if $(filter $(BUILD_VARIANT),$(OWRT.$(p).VARIANT)),\
		$(info Install/$(p): $(call owrt_one_line,$(call Package/$(p)/install,)))))
	$(info @@)
	@true
endif

install:
	@[ -n "$(ROOTFS)" ] || { echo "package.mk: make install ROOTFS=DIR PACKAGES='P ...'" >&2; exit 1; }
	mkdir -p $(ROOTFS)/usr/lib/opkg/info
	$(foreach p,$(or $(PACKAGES),$(OWRT_PACKAGES)),\
		rm -rf $(TMP_DIR)/ipk-$(p) && mkdir -p $(TMP_DIR)/ipk-$(p) && \
		$(TAR) -C $(TMP_DIR)/ipk-$(p) -xzf $(call owrt_ipk,$(p)) && \
		$(TAR) -C $(ROOTFS) -xzf $(TMP_DIR)/ipk-$(p)/data.tar.gz && \
		$(TAR) -tzf $(TMP_DIR)/ipk-$(p)/data.tar.gz | sed -n 's|^\./\(.*[^/]\)$$|/\1|p' >$(ROOTFS)/usr/lib/opkg/info/$(p).list && \
		$(TAR) -C $(ROOTFS)/usr/lib/opkg/info -xzf $(TMP_DIR)/ipk-$(p)/control.tar.gz ./control && \
		mv $(ROOTFS)/usr/lib/opkg/info/control $(ROOTFS)/usr/lib/opkg/info/$(p).control && \
		{ $(TAR) -C $(ROOTFS)/usr/lib/opkg/info -xzf $(TMP_DIR)/ipk-$(p)/control.tar.gz ./conffiles 2>/dev/null && \
		  mv $(ROOTFS)/usr/lib/opkg/info/conffiles $(ROOTFS)/usr/lib/opkg/info/$(p).conffiles || true; } && \
		echo "package.mk: installed $(p) into $(ROOTFS)" &&) true
