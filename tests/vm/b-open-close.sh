# Benchmark (no pass/fail): opening and closing the same LUKS2 volume with offdisk and with
# cryptsetup in the same VM, as a ratio. PBKDF2-SHA256 at 200000 iterations, so the unlock
# (KDF + keyslot decryption) weighs as it does on a real disk; then dm setup and teardown.
. "$VMDIR/lib.sh"
d=$(new_loop bench 64)
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 200000 "$d" "$PW"
ms() { echo $(( $(date +%s%N) / 1000000 )); }
runs=5
t0=$(ms); for _ in $(seq $runs); do cryptsetup open -d "$PW" "$d" bench && cryptsetup close bench; done; t1=$(ms)
for _ in $(seq $runs); do "$OFFDISK" open --key-file "$PW" --name bench "$d" >/dev/null && "$OFFDISK" close bench >/dev/null 2>&1; done; t2=$(ms)
cs=$(( (t1 - t0) / runs )); od=$(( (t2 - t1) / runs ))
echo "# bench open+close (LUKS2, pbkdf2 200k, TCG VM, mean of $runs): cryptsetup ${cs} ms, offdisk ${od} ms, offdisk/cryptsetup = $(awk -v a="$od" -v b="$cs" 'BEGIN{printf "%.2f", a/b}')"
