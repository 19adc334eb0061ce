#!/bin/sh
# A scripted pinentry speaking Assuan: answers GETPIN with the next line of
# $PINENTRY_ANSWERS (removing it), or cancels when none is left; logs commands to
# $PINENTRY_LOG. Only the description and prompt are logged, never the answer.
echo "OK Pleased to meet you"
while read -r cmd rest; do
  case "$cmd" in
    GETPIN)
      echo "GETPIN" >> "$PINENTRY_LOG"
      pin=$(head -n 1 "$PINENTRY_ANSWERS" 2>/dev/null)
      if [ -n "$pin" ]; then
        sed -i 1d "$PINENTRY_ANSWERS"
        echo "D $pin"; echo "OK"
      else
        echo "ERR 83886179 Operation cancelled <Pinentry>"
      fi ;;
    BYE) echo "OK closing connection"; exit 0 ;;
    *) echo "$cmd $rest" >> "$PINENTRY_LOG"; echo "OK" ;;
  esac
done
