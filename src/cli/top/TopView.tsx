// The dashboard in colour for the live app (ink): frame.ts's lines, drawn as they are. Every line
// is already built to the terminal's width there, rather than left to flexbox, so a frame never
// wraps.
import { Box, Text } from 'ink';
import type { TopViewProps } from './props.js';
import { frameLines } from './frame.js';

export function TopView(props: TopViewProps) {
  return (
    <Box flexDirection="column" width={props.columns}>
      {frameLines(props).map((line, i) => (
        <Text key={i} wrap="truncate-end">
          {line.length === 0
            ? ' '
            : line.map((s, k) => (
                <Text key={k} {...(s.color ? { color: s.color } : {})} bold={s.bold ?? false} dimColor={s.dim ?? false} inverse={s.inverse ?? false}>
                  {s.text}
                </Text>
              ))}
        </Text>
      ))}
    </Box>
  );
}
