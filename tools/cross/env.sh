# tools/cross/env.sh ARCH: sourced by the cross scripts; sets, for one of
# aarch64, armhf or mipsel, the Debian architecture (DEB_ARCH), the GNU
# triplet (TRIPLET), the cross compiler (CROSS_CC), the qemu-user binary
# (QEMU) and the folders under build/cross/ARCH (ROOT: the target's files
# extracted from Debian's .debs; DEBS: the downloaded .debs, kept as a cache).
case "${1:-}" in
    aarch64) DEB_ARCH=arm64 TRIPLET=aarch64-linux-gnu QEMU=qemu-aarch64-static ;;
    armhf) DEB_ARCH=armhf TRIPLET=arm-linux-gnueabihf QEMU=qemu-arm-static ;;
    mipsel) DEB_ARCH=mipsel TRIPLET=mipsel-linux-gnu QEMU=qemu-mipsel-static ;;
    *)
        echo "usage: ARCH=aarch64|armhf|mipsel (got '${1:-}')" >&2
        exit 2
        ;;
esac
ARCH=$1
CROSS_CC=${CROSS_CC:-$TRIPLET-gcc}
CROSS_DIR=${CROSS_DIR:-$(pwd)/build/cross/$ARCH}
ROOT=$CROSS_DIR/root
DEBS=$CROSS_DIR/debs
export DEB_ARCH TRIPLET QEMU ARCH CROSS_CC CROSS_DIR ROOT DEBS
